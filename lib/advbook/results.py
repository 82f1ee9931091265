"""Per-chapter results: metrics, claims with verdicts, and provenance.

Each executed chapter writes one JSON file (:meth:`ChapterResults.save`) holding its
resolved parameters, headline metrics, every paper claim beside the value we measured
with a verdict, and provenance (seed, device, package versions, git SHA, wall time).
The reproducibility page of the book is built from these files
(:mod:`advbook.report`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

VERDICTS = ("reproduced", "partly reproduced", "not reproduced", "inconclusive")
ASSESSMENTS = ("holds at this scale", "scale-limited", "contradicted")
"""What a verdict says about the paper: the claim holds at our scale; it did not hold, but the
evidence (seeds, larger budgets, the official code) points at our scale or budget; or the
evidence speaks against the claim itself."""


class Verdict(str):
    """A verdict string that also carries the rule that produced it (shown beside it in the book)
    and, from :func:`grade`, the graded value and thresholds (``graded``, kept in the results JSON
    so that runs at two scales can be compared: :func:`toward_claim`)."""

    rule: str = ""
    graded: dict | None = None

    def __new__(cls, verdict: str, rule: str = "", graded: dict | None = None) -> "Verdict":
        if verdict not in VERDICTS:
            raise ValueError(f"verdict {verdict!r} is not allowed; allowed: {', '.join(VERDICTS)}")
        obj = super().__new__(cls, verdict)
        obj.rule = rule
        obj.graded = graded
        return obj


def grade(value: float, reproduced_at: float, partly_at: float | None = None, *, higher_is_better: bool = True,
          name: str = "value") -> Verdict:
    """The graded verdict of one measured ``value`` against thresholds fixed before the run.

    With ``higher_is_better``: ``reproduced`` if ``value >= reproduced_at``, ``partly
    reproduced`` if ``value >= partly_at``, else ``not reproduced`` (the inequalities flip
    otherwise). A value that is NaN or ``None`` is ``inconclusive``. The returned
    :class:`Verdict` carries the rule as text, e.g. ``"gain >= 0.2 (partly >= 0.05)"``.
    """
    if partly_at is not None:
        ordered = partly_at <= reproduced_at if higher_is_better else partly_at >= reproduced_at
        if not ordered:
            side = "<=" if higher_is_better else ">="
            raise ValueError(f"need partly_at {side} reproduced_at, got partly_at={partly_at}, reproduced_at={reproduced_at}")
    op = ">=" if higher_is_better else "<="
    rule = f"{name} {op} {reproduced_at:g}" + (f" (partly {op} {partly_at:g})" if partly_at is not None else "")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Verdict("inconclusive", rule)
    graded = {"name": name, "value": float(value), "reproduced_at": reproduced_at, "partly_at": partly_at,
              "higher_is_better": higher_is_better}

    def meets(threshold: float) -> bool:
        return value >= threshold if higher_is_better else value <= threshold

    if meets(reproduced_at):
        return Verdict("reproduced", rule, graded)
    if partly_at is not None and meets(partly_at):
        return Verdict("partly reproduced", rule, graded)
    return Verdict("not reproduced", rule, graded)


def toward_claim(base: dict, other: dict) -> float | None:
    """How far ``other``'s graded value moved towards the claim's threshold from ``base``'s.

    Both are a claim's ``graded`` record (:func:`grade`). Positive: ``other`` (say, a run with
    more data, epochs or seeds) lies closer to ``reproduced_at`` than ``base``, in the units of
    the graded value; ``None`` when either has no graded value or the two were graded by
    different rules (names or thresholds), so their values do not compare.
    """
    keys = ("name", "reproduced_at", "partly_at", "higher_is_better")
    if not base or not other or any(base.get(k) != other.get(k) for k in keys):
        return None
    a, b = base.get("value"), other.get("value")
    if a is None or b is None:
        return None
    return (b - a) if base["higher_is_better"] else (a - b)


def repo_root(start: Path | None = None) -> Path:
    """The book's root (:func:`advbook.paths.find_root`); ``start`` (default: cwd) outside any checkout."""
    from .paths import find_root

    return find_root(start) or (start or Path.cwd()).resolve()


def results_dir() -> Path:
    """``$ADVBOOK_RESULTS`` or ``<repo>/book/results``."""
    path = Path(os.environ.get("ADVBOOK_RESULTS", repo_root() / "book" / "results"))
    path.mkdir(parents=True, exist_ok=True)
    return path


SIDE_PROFILES = ("long",)
"""Profiles whose results are kept beside the build's own (``<chapter>.long.json``), not instead of them."""


def results_filename(chapter: str, profile: str | None) -> str:
    """``<chapter>.json``, or ``<chapter>.<profile>.json`` for a side profile such as ``long``."""
    return f"{chapter}.{profile}.json" if profile in SIDE_PROFILES else f"{chapter}.json"


def git_sha(root: Path | None = None) -> str:
    """The checkout's commit, with ``-dirty`` when tracked files differ from it; ``unknown`` outside git."""
    root = root or repo_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("ADVBOOK_GIT_SHA", "unknown")


def provenance(device: Any = None) -> dict:
    """Versions, device, git SHA, host platform and time of this run."""
    import numpy
    import torch
    import torchvision

    from . import __version__
    from .runtime import device_name

    dev = torch.device(device) if device is not None else torch.device("cpu")
    return {
        "advbook": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "device": device_name(dev),
        "platform": platform.platform(),
        "git_sha": git_sha(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _plain(value: Any) -> Any:
    """Convert tensors / NumPy values to JSON-ready Python numbers and lists."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ChapterResults:
    """Collects one chapter's metrics and claims and writes them as JSON."""

    def __init__(self, chapter: str, title: str, config: dict, device: Any = None):
        self._start = time.perf_counter()
        self._larger: list[dict] | None = None
        self.chapter = chapter
        self.data: dict = {
            "chapter": chapter,
            "title": title,
            "parameters": _plain(dict(config)),
            "profile": config.get("profile"),
            "dataset": config.get("dataset"),
            "seed": config.get("seed"),
            "provenance": provenance(device),
            "metrics": {},
            "claims": [],
        }

    def metric(self, name: str, value: Any) -> Any:
        """Record a headline metric (numbers, lists or nested dicts) and return it."""
        self.data["metrics"][name] = _plain(value)
        return value

    def claim(self, claim: str, paper: str, ours: str, verdict: str, note: str = "", *, rule: str = "",
              assessment: str | None = None, evidence: str = "") -> None:
        """Record a paper claim beside our measurement with a verdict from :data:`VERDICTS`.

        ``verdict`` is best a :func:`grade` result, whose rule is then recorded (``rule``
        overrides it). ``assessment`` (one of :data:`ASSESSMENTS`) and ``evidence`` say what a
        verdict other than "reproduced" means for the paper.
        """
        if verdict not in VERDICTS:
            raise ValueError(f"verdict {verdict!r} is not allowed; allowed: {', '.join(VERDICTS)}")
        if assessment is not None and assessment not in ASSESSMENTS:
            raise ValueError(f"assessment {assessment!r} is not allowed; allowed: {', '.join(ASSESSMENTS)}")
        self.data["claims"].append({"claim": claim, "paper": paper, "ours": ours, "verdict": str(verdict),
                                    "rule": rule or getattr(verdict, "rule", ""), "note": note,
                                    "assessment": assessment, "evidence": evidence,
                                    "graded": _plain(getattr(verdict, "graded", None))})

    def larger_runs(self) -> list[dict]:
        """Claim records of runs of this chapter at a larger profile (:func:`advbook.protocol.larger_runs`)."""
        if self._larger is None:
            from .protocol import larger_runs

            self._larger = larger_runs(self.chapter, self.data["profile"] or "")
        return self._larger

    def grade(self, claim, values, *, ours: str = "", null=None, null_what: str | None = None,
              stronger=()):
        """Grade a declared claim from its replicates and record it (:func:`advbook.protocol.grade`).

        ``null``: the trivial baseline's replicates, graded by the same statistic and shown beside
        the claim (:func:`advbook.protocol.grade_null`). The assessment is derived from the larger
        runs of this chapter (the ``long`` profile, recorded runs) and ``stronger``: graded
        stronger settings this run measured. Returns the :class:`advbook.protocol.Graded`.
        """
        from .protocol import grade

        return self.add(grade(claim, values, ours=ours), null=null, null_what=null_what, stronger=stronger)

    def add(self, graded, *, null=None, null_what: str | None = None, stronger=()):
        """Record an already graded claim (e.g. one of :func:`advbook.protocol.grade_family`), with its
        null baseline and derived assessment (see :meth:`grade`); returns it."""
        from .protocol import assess, grade_null

        key = graded.claim.key
        if any(c.get("key") == key for c in self.data["claims"]):
            raise ValueError(f"claim {key!r} is recorded twice in chapter {self.chapter}")
        if null is not None:
            graded.null = grade_null(graded.claim, null, null_what)
        assess(graded, [*self.larger_runs(), *stronger])
        self.data["claims"].append(graded.record())
        return graded

    def claims_markdown(self) -> str:
        """The claims as a Markdown table (for ``IPython.display.Markdown``), with the verdict key above it."""
        if any("statistic" in c for c in self.data["claims"]):
            from .protocol import claims_table, verdict_key

            return verdict_key() + "\n\n" + claims_table(self.data["claims"])
        rows = ["| Claim | Paper | This run | Rule | Verdict |", "|---|---|---|---|---|"]
        for c in self.data["claims"]:
            note = f" ({c['note']})" if c["note"] else ""
            rule = f"`{c['rule']}`" if c.get("rule") else ""
            verdict = f"**{c['verdict']}**"
            if c.get("assessment"):
                verdict += f": {c['assessment']}" + (f" ({c['evidence']})" if c.get("evidence") else "")
            rows.append(f"| {c['claim']} | {c['paper']} | {c['ours']}{note} | {rule} | {verdict} |")
        return "\n".join(rows)

    def provenance_markdown(self) -> str:
        """Parameters and provenance as a two-column Markdown table."""
        p = self.data["provenance"]
        rows = ["| | |", "|---|---|"]
        rows += [f"| {k} | `{v}` |" for k, v in p.items()]
        rows.append(f"| parameters | `{json.dumps(self.data['parameters'], sort_keys=True)}` |")
        return "\n".join(rows)

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the JSON (atomically) to ``path`` or ``results_dir()/<chapter>.json``."""
        from .cache import STATS

        self.data["wall_seconds"] = round(time.perf_counter() - self._start, 2)
        self.data["cache"] = dict(STATS)
        path = Path(path) if path is not None else results_dir() / results_filename(self.chapter, self.data["profile"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=False))
        os.replace(tmp, path)
        return path
