"""Validation: one streaming pass over a whole source before any model loads.

`validate_source(spec)` reads every row (ignoring `limit`), counts them, finds every broken
row (bad JSON, bad UTF-8, missing or empty fields, a compressed stream cut short) and the
hygiene drops that need no model (empty, identical, ties, ...), and returns a
`ValidationReport`: counts, the first few positions, a one-line summary and a dict for the
dashboard. `raise_if_bad()` turns it into the one error the command line prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..core.errors import DataError
from .hygiene import ADVICE, label, plural
from .source import SKIP_ADVICE, DataSpec, check_rows


@dataclass
class ValidationReport:
    """What one pass over a source found. `ok` says whether scoring may start."""

    source: str
    skip_malformed: bool = False
    rows: int = 0
    usable: int = 0
    malformed: int = 0
    positions: list[str] = field(default_factory=list)  # "line 18: ... is not valid JSON"
    truncated: str | None = None  # the error when the compressed stream ends early
    error: str | None = None  # a whole-source problem (missing file, unknown columns, ...)
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when scoring may start: readable, some usable pair, and broken rows (if any)
        are to be skipped."""
        if self.error or self.usable == 0:
            return False
        return self.skip_malformed or (self.malformed == 0 and self.truncated is None)

    @property
    def warnings(self) -> list[str]:
        """Loud notes for a run that goes ahead anyway (skipped rows, a truncated stream)."""
        out = []
        if self.malformed and self.skip_malformed:
            out.append(f"{plural(self.malformed, 'malformed row')} will be skipped (first: "
                       f"{'; '.join(self.positions[:3])})")
        if self.truncated and self.skip_malformed:
            out.append(f"TRUNCATED: {self.truncated} Only the {plural(self.rows, 'row')} "
                       "before the cut are scored.")
        return out

    def summary(self) -> str:
        """One line, e.g. "2312 rows, 2303 usable; malformed 2 (line 18, line 40)"."""
        if self.error:
            return f"cannot read {self.source}: {self.error}"
        line = f"{plural(self.rows, 'row')}, {self.usable} usable"
        if self.malformed:
            where = ", ".join(_where(p) for p in self.positions)
            more = ", ..." if self.malformed > len(self.positions) else ""
            line += f"; malformed {self.malformed} ({where}{more})"
        if self.truncated:
            line += "; TRUNCATED: the compressed stream ends early"
        drops = {k: v for k, v in self.dropped.items() if k not in ("malformed", "truncated")}
        if drops:
            line += "; dropped: " + ", ".join(f"{label(k)} {v}" for k, v in drops.items())
        return line

    def to_dict(self) -> dict:
        """Plain data for the dashboard (`ok` and `summary` included)."""
        return {"source": self.source, "ok": self.ok, "summary": self.summary(),
                "rows": self.rows, "usable": self.usable, "malformed": self.malformed,
                "positions": list(self.positions), "truncated": self.truncated,
                "error": self.error, "dropped": dict(self.dropped),
                "skip_malformed": self.skip_malformed, "warnings": self.warnings,
                "problem": self.problem()}

    def problem(self) -> str | None:
        """The one-line error that stops a run (what, where, what to do), or None if ok."""
        if self.error:
            return self.error
        if self.truncated and not self.skip_malformed:
            return (f"{self.truncated} {plural(self.rows, 'row')} before the cut. Repair the "
                    f"file, or score only those rows ({SKIP_ADVICE}).")
        if self.malformed and not self.skip_malformed:
            more = (f" and {self.malformed - len(self.positions)} more"
                    if self.malformed > len(self.positions) else "")
            return (f"{self.source}: {plural(self.malformed, 'malformed row')} of "
                    f"{self.rows}: {' | '.join(self.positions)}{more}. Fix or remove them, "
                    f"or skip them ({SKIP_ADVICE}).")
        if self.rows == 0:
            return (f"{self.source} contains no rows: nothing to score. Check that it is the "
                    "right file (and split).")
        if self.usable == 0:
            reasons = sorted(self.dropped, key=lambda r: -self.dropped[r])
            what = "; ".join(f"{label(r)}: {ADVICE[r]}" for r in reasons if r in ADVICE)
            return (f"No usable pairs in {self.source}: {self.summary()}. What to do: {what}.")
        return None

    def raise_if_bad(self) -> None:
        """Raise `DataError` with `problem()` when scoring should not start."""
        msg = self.problem()
        if msg:
            raise DataError(msg)


def validate_source(spec: DataSpec, *, skip_malformed: bool | None = None,
                    max_positions: int = 5) -> ValidationReport:
    """Read the whole of `spec` once (streaming, `limit` ignored) and report what is broken.

    `skip_malformed` defaults to `spec.skip_malformed`; it decides `ok`, not what is counted.
    Whole-source errors (missing file, unknown columns) are reported in `error`, not raised.
    """
    skip = spec.skip_malformed if skip_malformed is None else skip_malformed
    report = ValidationReport(source=spec.display(), skip_malformed=skip)
    try:
        for c in check_rows(replace(spec, limit=None)):
            if c.reason == "truncated":
                report.truncated = c.error
                report.dropped["truncated"] = 1
                continue
            report.rows += 1
            if c.reason == "malformed":
                report.malformed += 1
                if len(report.positions) < max_positions:
                    report.positions.append(_position(c.where, c.error, report.source))
            elif c.reason is None:
                report.usable += 1
            if c.reason is not None:
                report.dropped[c.reason] = report.dropped.get(c.reason, 0) + 1
    except DataError as e:
        report.error = str(e)
    return report


def _position(where: str, error: str | None, source: str) -> str:
    """"line 18 is not valid JSON (...)": the error without the source name (said once)."""
    text = (error or where).rstrip(".")
    prefix = f"{source}: "
    if text.startswith(prefix):
        text = text[len(prefix):]
    return text if text.startswith(where) else f"{where}: {text}"


def _where(position: str) -> str:
    """"line 18" from "line 18 is not valid JSON (...)" or "line 18: chosen must be ..."."""
    head = position.split(":", 1)[0]
    for verb in (" is ", " has "):
        head = head.split(verb, 1)[0]
    return head
