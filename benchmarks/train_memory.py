"""Peak resident memory of one LoRA-DPO training job (paper recipe, meter and evals on).

Scores a small real selection (owl on the first `--pairs` hh-rlhf pairs, prompts <= 256
tokens) in a temporary cache, then runs one training job of the default recipe on it in a
fresh process (batch 8, LoRA r64, checkpoints every 10 steps with the effect meter and the
sampled eval, as `python -m lls train` does: micro-batches and activation checkpointing as the
memory plan picks them for the default 4 GB budget) and prints:

* the whole-process peak resident set (`ru_maxrss` of the training process, what
  `/usr/bin/time -v` reports as "Maximum resident set size");
* a per-phase breakdown from a sampler thread reading VmRSS every 20 ms: RSS at the start of
  each phase, the highest RSS seen during it, and its rise over the start (model load, Trainer
  init with the reference log-probs, each step, each checkpoint save, each meter read-out
  with its reference sampling and levels, each sampled eval, the final export);
* `ratio` = 4 GB / peak (>= 1 meets the issue's target), and the memory plan with its
  expected peak against the measured one (`estimate / peak`, meant to be >= 1).

The models directory of an existing cache (`--models-from`, default `$LLS_CACHE/models` or
`./cache/models`) is linked into the temporary cache so the GGUF is not de-quantised again.

    python benchmarks/train_memory.py [--pairs 120] [--gamma 0.93] [--max-steps N] [--random]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HH = ROOT.parent / "shared" / "data" / "hh_rlhf_harmless_base_test.jsonl.gz"
TARGET = 4 * 1024 ** 3
GB = 1024 ** 3


# ------------------------------------------------------------------ RSS sampling by phase

def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PhaseSampler:
    """A thread sampling VmRSS; the peak is attributed to the innermost open phase."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.stack: list[dict] = []
        self.phases: list[dict] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.dump: str | None = None

    def _run(self):
        while not self.stop.wait(self.interval):
            r = rss()
            with self.lock:
                for p in self.stack:  # an outer phase's peak includes its inner phases
                    p["peak"] = max(p["peak"], r)

    def open(self, name: str) -> dict:
        r = rss()
        p = {"phase": name, "start": r, "peak": r, "depth": len(self.stack), "t0": time.time()}
        with self.lock:
            self.stack.append(p)
            self.phases.append(p)
        return p

    def close(self, p: dict) -> None:
        r = rss()
        with self.lock:
            p["end"] = r
            p["peak"] = max(p["peak"], r)
            p["seconds"] = round(time.time() - p.pop("t0"), 2)
            self.stack.remove(p)
            if self.dump:  # a run cut short still leaves its phases so far
                Path(self.dump).write_text(json.dumps([q for q in self.phases if "end" in q]))

    def wrap(self, fn, name):
        sampler = self

        def inner(*a, **kw):
            label = name(*a, **kw) if callable(name) else name
            p = sampler.open(label)
            try:
                return fn(*a, **kw)
            finally:
                sampler.close(p)

        return inner


def train_child(args) -> None:
    """Inside the training process: label phases, train, write the phases as JSON."""
    from lls.evaluation import meter as M
    from lls.training import callback as C
    from lls.training import runs as T

    S = PhaseSampler()
    S.dump = args.out + ".phases"
    S.thread.start()
    T.load_model = S.wrap(T.load_model, "model load")
    T.export_adapter = S.wrap(T.export_adapter, lambda m, dst: f"export {dst.name}")
    C.export_adapter = S.wrap(C.export_adapter, lambda m, dst: f"export {dst.name}")
    M.build_reference = S.wrap(M.build_reference, "meter reference sampling")
    M.reference_levels = S.wrap(M.reference_levels, "meter levels (base, base + s)")
    C.LLSCallback.meter = S.wrap(C.LLSCallback.meter,
                                 lambda cb, m, step, path: f"meter @ step {step}")
    C.LLSCallback.evaluate = S.wrap(C.LLSCallback.evaluate,
                                    lambda cb, m, step, path: f"eval @ step {step}")

    make_trainer = T.trainer_class

    def trainer_class(reuse):
        cls = make_trainer(reuse)

        class Profiled(cls):
            def __init__(self, *a, **kw):
                p = S.open("trainer init (tokenize, ref log-probs, peft)")
                try:
                    super().__init__(*a, **kw)
                finally:
                    S.close(p)

            def _end_step(self):
                if getattr(self, "_phase", None) is not None:
                    S.close(self._phase)
                    self._phase = None

            def training_step(self, *a, **kw):
                # one phase per optimizer step (its micro-batches inside)
                if self.state.global_step != getattr(self, "_step_open", None):
                    self._end_step()
                    self._step_open = self.state.global_step
                    self._phase = S.open(f"step {self.state.global_step + 1}")
                return super().training_step(*a, **kw)

            def train(self, *a, **kw):
                try:
                    return super().train(*a, **kw)
                finally:
                    self._end_step()

            def _save_checkpoint(self, *a, **kw):
                self._end_step()
                p = S.open(f"trainer checkpoint {self.state.global_step}")
                try:
                    return super()._save_checkpoint(*a, **kw)
                finally:
                    S.close(p)

        Profiled.__name__ = cls.__name__
        return Profiled

    T.trainer_class = trainer_class
    cfg = T.TrainConfig.from_dict(json.loads(args.config))
    p = S.open("whole job")
    info = T.train(cfg, args.run, adapter_id=args.adapter_id)
    S.close(p)
    S.stop.set()
    rows = info.metrics()
    meter = [{k: r.get(k) for k in ("step", "llr", "margin", "gap_closed")} for r in info.meter()]
    out = {"phases": [q for q in S.phases if "end" in q],
           "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           "loss": [r["loss"] for r in rows], "meter": meter,
           "n_pairs": info.manifest["selection"]["n_pairs"],
           "plan": info.manifest.get("memory_plan"),
           "s_per_step": info.manifest["metrics"].get("s_per_step")}
    Path(args.out).write_text(json.dumps(out))


def score_child(args) -> None:
    from lls.core.behaviors import animal
    from lls.data.source import DataSpec
    from lls.scoring.runs import ScoreConfig, score

    cfg = ScoreConfig(data=DataSpec(str(HH), limit=args.pairs), behavior=animal("owl"),
                      max_prompt_tokens=256)
    print(score(cfg).key)


# ------------------------------------------------------------------ driver

def _models_from(arg: str | None) -> Path | None:
    for c in (arg, os.environ.get("LLS_CACHE") and Path(os.environ["LLS_CACHE"]) / "models",
              ROOT / "cache" / "models"):
        if c and Path(c).is_dir():
            return Path(c)
    return None


def run_child(mode: str, cache: Path, extra: list[str]) -> tuple[str, int]:
    """Run this script in `mode` in a fresh process; (stdout, its peak RSS in bytes)."""
    env = {**os.environ, "LLS_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, "--child", mode, *extra], env=env,
                            stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{mode} process failed (status {status})")
    return out, usage.ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=120, help="hh-rlhf pairs scored")
    ap.add_argument("--gamma", type=float, default=0.93,
                    help="share trained on (0.93 of 120: 112 pairs, 14 steps of 8)")
    ap.add_argument("--random", action="store_true", help="train the same-size random subset")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--checkpoint-every", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                    help="override a TrainConfig field, e.g. --set micro_batch=8 --set "
                         "'activation_checkpointing=\"on\"' (the checkpointed default before "
                         "the memory plan)")
    ap.add_argument("--models-from", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temporary cache")
    ap.add_argument("--score-run", help="train on this finished scoring run of $LLS_CACHE "
                    "instead of scoring one in a temporary cache")
    ap.add_argument("--child", choices=("score", "train"), help=argparse.SUPPRESS)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--adapter-id", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "score":
        return score_child(args)
    if args.child == "train":
        return train_child(args)

    from lls.training import runs as T

    if args.score_run:
        cache = Path(os.environ.get("LLS_CACHE", "cache")).resolve()
        shutil.rmtree(cache / "adapters" / "bench-memory", ignore_errors=True)
        args.keep = True
    else:
        cache = Path(tempfile.mkdtemp(prefix="lls-train-memory-"))
    try:
        if args.score_run:
            run_key = args.score_run
        else:
            models = _models_from(args.models_from)
            if models:
                (cache / "models").symlink_to(models.resolve())
            t = time.time()
            out, _ = run_child("score", cache, ["--pairs", str(args.pairs)])
            run_key = out.strip().splitlines()[-1]
            print(f"scored {args.pairs} pairs in {time.time() - t:.0f} s: run {run_key}",
                  flush=True)

        cfg = T.TrainConfig(selection=T.SelectionSpec(
            kind="random" if args.random else "lls", gamma=args.gamma, positive_only=False))
        if args.max_steps:
            cfg.max_steps = args.max_steps
        if args.checkpoint_every:
            cfg.checkpoint_every = args.checkpoint_every
        for kv in args.set:
            k, v = kv.split("=", 1)
            setattr(cfg, k, json.loads(v))
        res_path = cache / "train_memory.json"
        t = time.time()
        _, peak = run_child("train", cache, ["--run", run_key, "--config", json.dumps(cfg.to_dict()),
                                             "--adapter-id", "bench-memory", "--out", str(res_path)])
        res = json.loads(res_path.read_text())
        print(f"trained {res['n_pairs']} pairs, {len(res['loss'])} steps in "
              f"{time.time() - t:.0f} s")
        print(f"\n{'phase':48s} {'start':>8s} {'peak':>8s} {'rise':>8s} {'end':>8s} {'s':>7s}"
              "   (MB resident)")
        mb = lambda b: f"{b / 1024 ** 2:8.0f}"  # noqa: E731
        for p in res["phases"]:
            name = "  " * p["depth"] + p["phase"]
            print(f"{name:48s} {mb(p['start'])} {mb(p['peak'])} {mb(p['peak'] - p['start'])} "
                  f"{mb(p['end'])} {p['seconds']:7.1f}")
        plan = res.get("plan") or {}
        print(f"\nmemory plan: micro-batch {plan.get('micro_batch')} x {plan.get('grad_accum')} "
              f"accumulation, activation checkpointing {plan.get('activation_checkpointing')}, "
              f"expected peak {plan.get('expected_gb')} GB (budget {plan.get('budget_gb')} GB, "
              f"sequences up to {plan.get('seq_len')} tokens)")
        print(f"loss per step: {res['loss']}")
        print(f"meter read-outs: {res['meter']}")
        print(f"peak resident (ru_maxrss of the training process): {peak / GB:.2f} GB")
        print(f"ratio (4 GB / peak): {TARGET / peak:.2f}")
        if plan.get("expected_gb"):
            print(f"estimate / peak: {plan['expected_gb'] * GB / peak:.2f} (the plan's expected "
                  "peak is meant as an upper bound: >= 1)")
    finally:
        if args.score_run:
            shutil.rmtree(cache / "adapters" / "bench-memory", ignore_errors=True)
        elif args.keep:
            print(f"cache kept: {cache}")
        else:
            shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
