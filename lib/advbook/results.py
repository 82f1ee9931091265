"""Per-chapter results: metrics, claims with verdicts, and provenance.

Each executed chapter writes one JSON file (:meth:`ChapterResults.save`) holding its
resolved parameters, headline metrics, every paper claim graded by the replication protocol
(:mod:`advbook.protocol`: :meth:`ChapterResults.grade`), and provenance (seed, device,
package versions, git SHA, wall time).
The reproducibility page of the book is built from these files
(:mod:`advbook.book.report`).
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

from .paths import repo_root, results_dir, results_filename  # noqa: F401  (repo_root: for chapters)
from .protocol import VERDICTS  # noqa: F401  (the five verdict words, for readers of this module)


def load_record(relative: str | os.PathLike, root: Path | None = None) -> dict | None:
    """A JSON record committed in the checkout (e.g. ``book/measurements/autoattack_budget.json``) at ``root``
    (default: this checkout), or ``None`` when there is none or it cannot be read: a chapter then says so
    instead of failing."""
    path = (Path(root) if root is not None else repo_root()) / relative
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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

    from . import __version__, precision
    from .runtime import device_name

    dev = torch.device(device) if device is not None else torch.device("cpu")
    return {
        "advbook": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "device": device_name(dev),
        "training_precision": precision.training(),
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
        from .protocol import claims_table, verdict_key

        return verdict_key() + "\n\n" + claims_table(self.data["claims"])

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
