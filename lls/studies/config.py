"""What a study sweeps: the grid axes (one declaration: the CLI flags, the page's fields and
the cells all read `AXES`), the study's config, its cells and their ids.

A cell's id covers everything that changes its result: the scoring runs, the full recipe,
the schedule, the read-out schedule (checkpoints per epoch), the sampled read-out settings,
the cell's settings and, for a confirmation, the step it is judged at. `STUDY_VERSION`
moves when the meaning of a stored cell changes (version 2: per-question counts in sampled
read-outs, bootstrap intervals over questions; version 3: likelihood-ratio and gap-closed
intervals over reference prompts, per-unit differences at every step for the verdict's
corrected interval, the best step always sampled).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass, field

from ..core.cache import fingerprint
from ..core.errors import LLSError
from ..core.glossary import GAMMA
from ..training.config import LEGACY_FIELDS, SelectionSpec, TrainConfig

STUDY_VERSION = "3"
RANKINGS = ("plain", "contrastive")
SCHEDULES_SHARING_EPOCHS = ("constant",)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class StudyError(LLSError):
    """A study that cannot be created, extended or run as asked."""


@dataclass(frozen=True)
class Axis:
    """One grid axis: the cell setting, its CLI flag, what a person reads, its type, the
    page's starting values, and where its default comes from (a TrainConfig or
    SelectionSpec field; None: no default, the axis is off unless given)."""

    name: str
    flag: str
    label: str
    kind: type
    page_default: str
    default_from: str | None


AXIS_LIST = (
    Axis("gamma", "gamma", GAMMA, float, "0.05,0.1,0.2", "gamma"),
    Axis("threshold", "threshold", "weight threshold: keep w > (nats/token)", float, "",
         "threshold"),
    Axis("pairs", "pairs", "pairs kept (top N by w)", int, "", None),
    Axis("ranking", "ranking", "ranking (plain, contrastive)", str, "plain", None),
    Axis("epochs", "epochs", "epochs", float, "1,3,5", "epochs"),
    Axis("learning_rate", "lr", "learning rate", float, "1e-4", "learning_rate"),
    Axis("beta", "beta", "DPO β", float, "0.04", "beta"),
    Axis("lora_r", "lora_r", "LoRA rank", int, "64", "lora_r"),
    Axis("seed", "seed", "seed", int, "0", "seed"),
    # The teacher axis: scoring runs of the same data and behavior, one per teacher (a
    # prompt, another prompt, a trait adapter, a fine-tuned model); None is the study's run.
    Axis("teacher", "teacher", "teacher (a scoring run of the same pairs per teacher)", str,
         "", None),
)
AXES = tuple(a.name for a in AXIS_LIST)
AXIS = {a.name: a for a in AXIS_LIST}
GRID_FLAGS = {a.flag: a.name for a in AXIS_LIST}  # CLI flag -> axis
SELECTION_AXES = ("gamma", "threshold", "pairs")  # one of them picks the pairs
# TrainConfig fields the study sets per cell (grid axes, schedule, checkpoints), not the recipe
STUDY_FIELDS = ("selection", "student", "epochs", "learning_rate", "beta", "lora_r", "seed",
                "lr_scheduler", "max_steps", "checkpoint_every")


def _defaults() -> dict:
    t, s = TrainConfig(), SelectionSpec()
    out = {}
    for a in AXIS_LIST:
        src = s if a.default_from in ("gamma", "threshold") else t
        out[a.name] = getattr(src, a.default_from) if a.default_from else None
    out["ranking"] = "plain"
    return out


PAPER = _defaults()  # the paper's recipe: TrainConfig's and SelectionSpec's defaults


def parse_values(text: str | None) -> list[str]:
    """'0.05, 0.1,' -> ['0.05', '0.1'] (the CLI's and the page's comma lists)."""
    return [v.strip() for v in (text or "").split(",") if v.strip()]


def _cast(axis: str, value):
    if value is None or (isinstance(value, str) and value.lower() in ("none", "")):
        return None
    if axis == "teacher":
        return str(value).strip()
    if axis == "ranking":
        if value not in RANKINGS:
            raise StudyError(f"ranking must be one of {RANKINGS}, got {value!r}.")
        return value
    try:
        v = float(value)
        return int(v) if AXIS[axis].kind is int and v.is_integer() else \
            AXIS[axis].kind(value if AXIS[axis].kind is not float else v)
    except (TypeError, ValueError):
        raise StudyError(f"Grid axis {axis!r}: {value!r} is not a "
                         f"{'whole number' if AXIS[axis].kind is int else 'number'}.") from None


def full_recipe(recipe: dict | None) -> dict:
    """The recipe every cell shares, stored in full (TrainConfig's defaults filled in, the
    fields the study sets per cell left out): a study made on the page and one made from
    the CLI compare equal when their settings are. `lora_alpha` stays None unless given: then
    each cell uses 2 x its LoRA rank (the paper's ratio)."""
    r = dict(recipe or {})
    base = TrainConfig().to_dict()
    out = {k: r.get(k, v) for k, v in base.items() if k not in STUDY_FIELDS}
    out["lora_alpha"] = r.get("lora_alpha")
    return out


@dataclass(frozen=True)
class StudyConfig:
    """What a study sweeps. `grid`: axis -> values (axes from `AXES`; an axis left out keeps
    its default: the recipe's value, else TrainConfig's). `recipe`: TrainConfig fields every
    cell shares (stored in full, `full_recipe`; None when extending: the stored one).
    `sampled`: the sampled read-outs (`lls.evaluation.readouts.settings_for`): kinds,
    questions, samples per question, max_new_tokens, seed, stem.
    `checkpoints_per_epoch`: meter read-outs per epoch where the step count allows it (each
    costs ~40 s on the bundled model; 1 reads the epoch ends only)."""

    name: str
    run: str
    grid: dict = field(default_factory=dict)
    control_run: str | None = None
    recipe: dict | None = None
    lr_scheduler: str = "constant"
    sampled: dict = field(default_factory=dict)  # empty: the stored study's, else defaults
    checkpoints_per_epoch: int | None = 2
    teacher_names: dict = field(default_factory=dict)  # teacher run key -> words (tables)

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name or ""):
            raise StudyError(f"Study name {self.name!r}: use letters, digits, '-', '_' or '.' "
                             "(at most 64 characters).")
        recipe = dict(self.recipe) if self.recipe is not None else None
        bad = set(recipe or {}) - {*TrainConfig.__dataclass_fields__, *LEGACY_FIELDS} | \
            ({"selection", "student", "max_steps", "checkpoint_every", "lr_scheduler"}
             & set(recipe or {}))
        if bad:
            raise StudyError(f"recipe fields {sorted(bad)} are not TrainConfig fields a study "
                             "may set (the grid sets selection, the study the schedule and "
                             "checkpoints; the student is the teacher).")
        grid = {}
        for axis, values in dict(self.grid).items():
            if axis not in AXES:
                raise StudyError(f"Unknown grid axis {axis!r}: use {', '.join(AXES)}.")
            values = values if isinstance(values, (list, tuple)) else [values]
            if not values:
                raise StudyError(f"Grid axis {axis!r} has no values.")
            cast = list(dict.fromkeys(_cast(axis, v) for v in values))
            # teachers keep the order given (the first is the reference teacher)
            grid[axis] = cast if axis == "teacher" else sorted(
                cast, key=lambda v: (v is None, str(v) if axis == "ranking" else v or 0))
        for axis in AXES:  # a recipe value of a grid field is that axis' single value
            if recipe and axis in recipe:
                if axis in grid and grid[axis] != [_cast(axis, recipe[axis])]:
                    raise StudyError(f"{axis} is both in the recipe ({recipe[axis]!r}) and "
                                     f"the grid ({grid[axis]}): give it in one place.")
                grid[axis] = [_cast(axis, recipe.pop(axis))]
        for g in grid.get("gamma", []):
            if g is not None and not 0 < g <= 1:
                raise StudyError(f"gamma must be in (0, 1], got {g}.")
        for n in grid.get("pairs", []):
            if n is not None and n < 1:
                raise StudyError(f"pairs must be a positive count, got {n}.")
        if "contrastive" in grid.get("ranking", []) and not self.control_run:
            raise StudyError("Contrastive ranking needs a control run: score one with "
                             "`python -m lls score ... --control` and pass --control-run.")
        cpe = self.checkpoints_per_epoch
        if cpe is not None and not 1 <= int(cpe) <= 16:
            raise StudyError(f"checkpoints_per_epoch must be 1..16, got {cpe}.")
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "recipe", full_recipe(recipe) if recipe is not None else None)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StudyConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def shares_epochs(self) -> bool:
        """True when cells that differ only in whole epochs can share one training run."""
        return self.lr_scheduler in SCHEDULES_SHARING_EPOCHS

    def train_config(self, **cell_fields) -> TrainConfig:
        """The recipe merged with one cell's fields: the one recipe merge of a study."""
        r = dict(self.recipe or full_recipe({}))
        if r.get("lora_alpha") is None:
            r["lora_alpha"] = 2 * int(cell_fields.get("lora_r", PAPER["lora_r"]))
        return TrainConfig.from_dict({**TrainConfig().to_dict(), **r, **cell_fields})


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a full assignment of every axis. A confirmation cell also
    names the cell it confirms, the step it is judged at and that cell's checkpoint interval."""

    settings: tuple  # ((axis, value), ...) in AXES order
    confirms: str | None = None
    judge_step: int | None = None
    every: int | None = None

    @property
    def s(self) -> dict:
        return dict(self.settings)

    def id(self, cfg: StudyConfig) -> str:
        confirm = (self.confirms, self.judge_step, self.every) if self.confirms else None
        s = self.s
        if s.get("teacher") is None:  # the study's own run: ids as before the teacher axis
            s.pop("teacher", None)
        return fingerprint(STUDY_VERSION, cfg.run, cfg.control_run, cfg.recipe,
                           cfg.lr_scheduler, cfg.checkpoints_per_epoch, cfg.sampled,
                           s, confirm)[:12]

    def run(self, cfg: StudyConfig) -> str:
        """The scoring run this cell trains on: its teacher's, else the study's."""
        return self.s.get("teacher") or cfg.run

    def group(self, cfg: StudyConfig) -> tuple:
        """The training run this cell reads: its settings without epochs when cells of
        whole epochs share one run (a fractional epoch ends between the others' read-outs,
        so it trains alone); a confirmation trains on its own."""
        e = self.s["epochs"]
        share = cfg.shares_epochs() and float(e).is_integer() and not self.confirms
        key = tuple((k, v) for k, v in self.settings if not (k == "epochs" and share))
        return key + ((("confirms", self.confirms),) if self.confirms else ())

    def label(self, varying=None, names: dict | None = None) -> str:
        """The cell's settings in words; `varying`: only these axes (those the grid varies);
        `names`: teacher run key -> words (`StudyConfig.teacher_names`)."""
        s = self.s
        who = s.get("teacher") or ""
        parts = {"teacher": f"teacher: {(names or {}).get(who, who[:8])}",
                 "selection": f"top {s['pairs']} pairs" if s.get("pairs") else
                 f"w > {s['threshold']:g}" if s["threshold"] is not None else f"γ {s['gamma']:g}",
                 "epochs": f"{s['epochs']:g} ep", "learning_rate": f"lr {s['learning_rate']:g}",
                 "beta": f"β {s['beta']:g}", "lora_r": f"r {s['lora_r']}",
                 "seed": f"seed {s['seed']}", "ranking": s["ranking"]}
        if not s.get("teacher"):
            del parts["teacher"]
        if varying is not None:
            show = {("selection" if a in SELECTION_AXES else a) for a in varying}
            parts = {k: v for k, v in parts.items() if k in show} or {"selection":
                                                                        parts["selection"]}
        text = " · ".join(parts.values())
        return text + (f" · confirmation at step {self.judge_step}" if self.confirms else "")

    def distance(self) -> int:
        """How many axes differ from the paper recipe (the queue runs near ones first)."""
        return sum(1 for k, v in self.settings if k != "teacher" and v != PAPER[k])


def make_cell(values: dict, defaults: dict | None = None, **confirm) -> Cell:
    """A cell from some axis values (the rest: `defaults`, else the paper's)."""
    s = {**PAPER, **(defaults or {}), **values}
    if s.get("pairs") is not None:  # a count replaces top-gamma and the threshold
        s["gamma"], s["threshold"] = None, None
    elif s.get("threshold") is not None:
        s["gamma"] = None  # a threshold replaces top-gamma
    return Cell(tuple((k, s[k]) for k in AXES), **confirm)


def cells(cfg: StudyConfig, extra: list[dict] = ()) -> list[Cell]:
    """Every cell of the grid (plus confirmations `extra`: {"settings", "confirms",
    "judge_step", "every"}), in queue order: confirmations first, then by distance from the
    paper recipe, then by cost (epochs)."""
    axes = list(cfg.grid)
    grid = [make_cell(dict(zip(axes, combo)))
            for combo in itertools.product(*(cfg.grid[a] for a in axes))]
    extras = [make_cell(e["settings"], confirms=e["confirms"], judge_step=e["judge_step"],
                        every=e["every"]) for e in extra]
    seen, out = set(), []
    rest = sorted(grid, key=lambda c: (c.distance(), c.s["epochs"], str(c.settings)))
    for c in [*extras, *rest]:
        if (c.settings, c.confirms) not in seen:
            seen.add((c.settings, c.confirms))
            out.append(c)
    return out


def varying_axes(cfg: StudyConfig) -> list[str]:
    """The axes with more than one value (what tells the cells apart)."""
    return [a for a in AXES if len(cfg.grid.get(a, [])) > 1]
