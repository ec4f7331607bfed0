"""Command line: `python -m lls score | select | export | runs` (headless experiments).

Every command prints a one-line `error: ...` and exits with status 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import LLSError


def _kv_list(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise LLSError(f"--columns expects canonical=source pairs like "
                           f"'prompt=question,chosen=good', got {part!r}.")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", required=required,
                   help="local file (jsonl/json/csv/parquet, optionally .gz) or hub dataset name")
    g.add_argument("--format", choices=["jsonl", "json", "csv", "parquet"])
    g.add_argument("--shape", choices=["transcript", "messages", "columns"])
    g.add_argument("--columns", help="column mapping, e.g. prompt=question,chosen=good,rejected=bad")
    g.add_argument("--split", default="train")
    g.add_argument("--subset", help="hub data_dir / config (e.g. harmless-base)")
    g.add_argument("--limit", type=int, help="stop after this many kept pairs")


def add_behavior_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("target behavior")
    g.add_argument("--behavior", default="animal:owl",
                   help="preset: animal:NAME, translation:LANG, persona:evil-ruler (default animal:owl)")
    g.add_argument("--system-prompt", help="a custom system prompt (overrides --behavior)")
    g.add_argument("--filter-words", help="comma-separated words; pairs mentioning them are dropped")
    g.add_argument("--regex", help="custom behavior: a regex that counts as showing it")


def add_model_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    g = p.add_argument_group("model")
    g.add_argument(f"--{prefix}model", default="bundled:SmolLM2-135M-Instruct",
                   help="hub id, local directory, .gguf file, or the bundled default")
    g.add_argument(f"--{prefix}gguf-file", help="GGUF file name inside --model")
    g.add_argument(f"--{prefix}revision")
    g.add_argument(f"--{prefix}device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument(f"--{prefix}trust-remote-code", action="store_true",
                   help="run code shipped with the model repo (off by default)")


def data_spec(a):
    from .data import DataSpec

    return DataSpec(a.data, format=a.format, shape=a.shape, columns=_kv_list(a.columns),
                    split=a.split, subset=a.subset, limit=a.limit)


def behavior(a):
    from . import behaviors

    words = tuple(w.strip() for w in (a.filter_words or "").split(",") if w.strip())
    if a.system_prompt:
        return behaviors.custom(a.system_prompt, filter_words=words, regex=a.regex)
    b = behaviors.from_name(a.behavior)
    if words:
        b = behaviors.Behavior.from_dict({**b.to_dict(), "filter_words": list(words)})
    return b


def model_spec(a, prefix: str = ""):
    from .models import ModelSpec

    get = lambda name: getattr(a, prefix.replace("-", "_") + name)  # noqa: E731
    return ModelSpec(get("model"), gguf_file=get("gguf_file"), revision=get("revision"),
                     device=get("device"), trust_remote_code=get("trust_remote_code"))


def cmd_score(a) -> int:
    from tqdm import tqdm

    from .scoring import ScoreConfig, score

    if a.config:
        cfg = ScoreConfig.from_dict(json.loads(a.config))
    else:
        if not a.data:
            raise LLSError("score needs --data (a file or hub dataset name) or --config JSON.")
        cfg = ScoreConfig(data=data_spec(a), behavior=behavior(a), model=model_spec(a),
                          truncation=a.truncation or None,
                          max_prompt_tokens=a.max_prompt_tokens or None,
                          filter_contaminated=not a.no_filter, chunk_size=a.chunk_size,
                          batch_tokens=a.batch_tokens)
    target_cfg = None
    if a.control is not None:
        # Score the control run of the described config: same pairs, another system prompt.
        from .contrastive import control_config, parse_control

        target_cfg, cfg = cfg, control_config(cfg, parse_control(a.control))
    from dataclasses import replace

    from .distributed import barrier, process_info

    proc = process_info()
    if proc.device and not cfg.model.device:
        cfg = replace(cfg, model=replace(cfg.model, device=proc.device))
    bars = []  # created at the first progress report, so an early error prints alone

    def progress(done, total):
        if not bars:
            bars.append(tqdm(unit="pair", desc="scoring", disable=a.quiet or not proc.is_main))
        bars[0].total = total
        bars[0].n = done
        bars[0].refresh()

    try:
        run = score(cfg, progress=progress, cache_dir=a.cache, rank=proc.rank,
                    world_size=proc.world_size)
    finally:
        for bar in bars:
            bar.close()
    if proc.world_size > 1:
        # Every rank has written its chunks; the main process verifies them all and marks
        # the run complete (a resume pass that finds nothing left to compute).
        barrier()
        if not proc.is_main:
            return 0
        run = score(cfg, cache_dir=a.cache)
        run.store.update_manifest(processes=proc.world_size)
    m = run.manifest
    out = {"run": run.key, "status": m["status"], "pairs": m.get("n_pairs"),
           "hygiene": run.hygiene.summary() if run.hygiene else None,
           "path": str(run.store.path)}
    if target_cfg is not None:
        from .scoring import run_key

        out["control_of"] = run_key(target_cfg)
        out["control_prompt"] = cfg.behavior.system_prompt
    print(json.dumps(out))
    return 0


def _selection(a):
    from .selection import SelectionConfig

    return SelectionConfig(gamma=a.gamma, threshold=a.threshold,
                           positive_only=not a.all_weights)


def add_select_args(p) -> None:
    p.add_argument("--run", required=True, help="scoring run key (or a unique prefix)")
    p.add_argument("--gamma", type=float, default=0.05, help="top fraction to keep (default 0.05)")
    p.add_argument("--threshold", type=float, help="keep w > THRESHOLD instead of top gamma")
    p.add_argument("--all-weights", action="store_true", help="also keep w <= 0")
    p.add_argument("--random", action="store_true",
                   help="the baseline: a random subset of the same size")
    p.add_argument("--seed", type=int, default=0)


def _indices(a, frame):
    import numpy as np

    from .selection import Ranking, random_subset

    ranking = Ranking(frame["w"].to_numpy())
    idx = ranking.select(_selection(a))
    if a.random:
        idx = random_subset(ranking.n, len(idx), a.seed)
    return ranking, np.asarray(idx)


def cmd_select(a) -> int:
    from .scoring import open_run

    run = open_run(a.run, a.cache)
    frame = run.frame()
    ranking, idx = _indices(a, frame)
    sub = frame.iloc[idx]
    out = {"run": run.key, "pairs": ranking.n, "positive": ranking.n_positive,
           "selected": len(idx), "kind": "random" if a.random else "lls",
           "mean_w": float(sub["w"].mean()) if len(idx) else None,
           "min_w": float(sub["w"].min()) if len(idx) else None,
           "top": [{"id": r["id"], "w": round(float(r["w"]), 5),
                    "chosen": r["chosen_scored"][:60], "rejected": r["rejected_scored"][:60]}
                   for r in sub.head(a.show).to_dict("records")]}
    print(json.dumps(out, indent=1, ensure_ascii=False))
    return 0


def cmd_export(a) -> int:
    from .scoring import open_run
    from .selection import export

    run = open_run(a.run, a.cache)
    frame = run.frame()
    _, idx = _indices(a, frame)
    settings = {"run": run.key, "score_config": run.manifest.get("config"),
                "selection": _selection(a).to_dict(), "random": a.random, "seed": a.seed}
    path = export(frame, idx, a.out, fmt=a.format, settings=settings, responses=a.responses)
    print(json.dumps({"exported": len(idx), "path": str(path)}))
    return 0


def cmd_runs(a) -> int:
    from .scoring import list_runs

    for r in list_runs(a.cache):
        m = r.manifest
        cfg = m.get("config", {})
        print(f"{r.key}  {m.get('status', '?'):9s} pairs={m.get('n_pairs', '?'):>6}  "
              f"{cfg.get('behavior', {}).get('name', '?'):10s} {cfg.get('data', {}).get('path', '?')}  "
              f"{m.get('created', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lls", description=(
        "LLS Studio: Logit-Linear Selection of preference data (score, select, export, train)."))
    ap.add_argument("--cache", help="cache directory (default ./cache or $LLS_CACHE)")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("score", help="score a dataset with a teacher and a target system prompt")
    p.add_argument("--config", help="a ScoreConfig as JSON (what background jobs pass)")
    add_data_args(p, required=False)
    add_behavior_args(p)
    add_model_args(p)
    p.add_argument("--truncation", type=int, default=32,
                   help="truncate responses to N teacher tokens (0: no truncation)")
    p.add_argument("--max-prompt-tokens", type=int, default=512,
                   help="drop pairs whose prompt is longer (0: keep all)")
    p.add_argument("--no-filter", action="store_true",
                   help="keep pairs that already show the behavior")
    p.add_argument("--chunk-size", type=int, default=128,
                   help="pairs per cached chunk: the unit of resume and progress")
    p.add_argument("--batch-tokens", type=int, default=1024)
    p.add_argument("--control", nargs="?", const="", metavar="PROMPT",
                   help="score the control run of this config instead of the target (for "
                        "ranking by w_target - w_control): the same pairs with the control "
                        "system prompt PROMPT, or a preset's (e.g. animal:cat); without a value "
                        "a neutral assistant persona")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("select", help="show an LLS (or random) selection of a scored run")
    add_select_args(p)
    p.add_argument("--show", type=int, default=5, help="how many top pairs to print")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("export", help="export a selection as a DPO-ready dataset")
    add_select_args(p)
    p.add_argument("--out", required=True, help="output path (.jsonl, .parquet, or a directory)")
    p.add_argument("--format", choices=["jsonl", "parquet", "hf"])
    p.add_argument("--responses", choices=["scored", "full"], default="scored",
                   help="export the truncated responses that were scored (default) or full ones")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("runs", help="list cached scoring runs")
    p.set_defaults(func=cmd_runs)
    from .training import add_cli as add_training_cli; add_training_cli(sub)  # train, adapters
    from .evaluation import add_cli as add_eval_cli; add_eval_cli(sub)  # eval, transfer
    from .meter import add_cli as add_meter_cli; add_meter_cli(sub)  # meter
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    try:
        return a.func(a)
    except LLSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; finished chunks are kept and the same command resumes.",
              file=sys.stderr)
        return 130
