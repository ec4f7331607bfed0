"""`python -m lls train` and `python -m lls adapters`.

The training flags are generated from `TrainConfig`/`SelectionSpec` field metadata
(`lls.training.config`): one declaration per option, defaults read from the dataclasses.
"""

from __future__ import annotations

import json
import math
import typing
from dataclasses import MISSING, fields

from ..training.adapters import list_adapters
from ..training.config import SelectionSpec, TrainConfig
from ..training.runs import train
from .common import add_run_arg, alias

_PLAIN = {int: int, float: float, str: str}


def _value_type(tp):
    """int / float / str for `int`, `int | None`, ... (None: needs a `type` in metadata)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    return _PLAIN.get(args[0]) if len(args) == 1 else None


def _flag(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _default(f):
    return f.default if f.default is not MISSING else f.default_factory()


def add_config_flags(group, cls, prefix: str, flags: dict[str, str]) -> dict[str, str]:
    """Add one flag per field of dataclass `cls` to `group`; returns {field path: dest}.
    `flags` maps flags already added to their dest (a shared flag such as --seed is added
    once and feeds every field that names it)."""
    hints = typing.get_type_hints(cls)
    dests = {}
    for f in fields(cls):
        if hints[f.name] is SelectionSpec:
            continue  # its own argument group
        flag, meta, default = _flag(f), f.metadata, _default(f)
        path = prefix + f.name
        if flag in flags:
            dests[path] = flags[flag]
            continue
        dest = path.replace(".", "__")
        kw = {"dest": dest, "default": default, "help": meta.get("help", "")}
        if "const" in meta:
            kw.update(action="store_const", const=meta["const"])
        elif hints[f.name] is bool:
            kw["action"] = "store_false" if default else "store_true"
        else:
            kw["type"] = meta.get("type") or _value_type(hints[f.name])
            if "choices" in meta:
                kw["choices"] = meta["choices"]
            else:  # named after the flag (a renamed field keeps its old name inside)
                kw["metavar"] = flag.lstrip("-").replace("-", "_").upper()
        action = group.add_argument(flag, **kw)
        if meta.get("aliases"):
            alias(group, action, *meta["aliases"])
        flags[flag] = dests[path] = dest
    return dests


def register(sub) -> None:
    """Register `train` and `adapters` on the `python -m lls` subparsers."""
    p = sub.add_parser("train", help="LoRA-DPO training of a student on a selection")
    add_run_arg(p)
    p.add_argument("--config", help="a TrainConfig as JSON (what background jobs pass); "
                                    "other flags are ignored when given")
    flags: dict[str, str] = {}
    dests = add_config_flags(p.add_argument_group("selection"), SelectionSpec, "selection.", flags)
    g = p.add_argument_group("training")
    dests.update(add_config_flags(g, TrainConfig, "", flags))
    g.add_argument("--adapter-id", help="adapter id (default: derived from the settings; "
                                        "an existing id resumes)")
    g.add_argument("--baseline-of", metavar="ID",
                   help="mark this adapter as the random twin of adapter ID")
    p.set_defaults(func=cmd_train, config_dests=dests)

    p = sub.add_parser("adapters", help="list trained adapters")
    p.set_defaults(func=cmd_adapters)


def config_from_args(a) -> TrainConfig:
    """The TrainConfig of parsed `train` arguments (`--config` JSON wins over the flags)."""
    if a.config:
        return TrainConfig.from_dict(json.loads(a.config))
    values = {path: getattr(a, dest) for path, dest in a.config_dests.items()}
    sel = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("selection.")}
    top = {k: v for k, v in values.items() if not k.startswith("selection.")}
    # `--samples 0` (formerly --eval-samples 0) means "no checkpoint evals" (ids kept).
    top["eval_at_checkpoints"] = top["eval_at_checkpoints"] and top["eval_samples"] > 0
    return TrainConfig(**top, selection=SelectionSpec(**sel))


def cmd_train(a) -> int:
    cfg = config_from_args(a)
    info = train(cfg, a.run, cache_dir=a.cache, adapter_id=a.adapter_id,
                 baseline_of=a.baseline_of)
    m = info.manifest
    print(json.dumps({"adapter": info.id, "status": m.get("status"),
                      "final": str(info.final_path), "metrics": m.get("metrics")}, default=str))
    return 0


def cmd_adapters(a) -> int:
    for info in list_adapters(a.cache):
        m = info.manifest
        sel = m.get("selection", {})
        met = m.get("metrics") or {}
        ev = met.get("final_eval") or {}
        print(f"{info.id}  {info.status:9s} {sel.get('kind', '?'):6s} n={sel.get('n_pairs')}  "
              f"steps={met.get('steps')} loss={_fmt(met.get('final_loss'))} "
              f"rate={_fmt(ev.get('rate'))}  {info.path}")
    return 0


def _fmt(x) -> str:
    return "-" if x is None else (f"{x:.4g}" if isinstance(x, float) and math.isfinite(x) else str(x))
