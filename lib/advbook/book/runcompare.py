"""Two builds' claims side by side: did a change of arithmetic or of code move any conclusion?

``python -m advbook.book.runcompare BASE OTHER [--label-base fp32 --label-other bf16] [-o record.json]``
reads the chapters' results files (``<chapter>.json``) of two results folders (two builds of the same
profile) and, for every claim both graded with the same statistic and SESOI, says

- whether the other build's estimate lies inside the base build's 95% interval (and the reverse);
- whether the two verdicts are the same word.

The book uses it three times: as the evidence on whether bf16 training changes a conclusion (an fp32 and a
bf16 quick build; the record, ``book/measurements/precision.json``, is shown on the Reproducibility page),
with its yardstick, what a change of training seeds alone does (two fp32 quick builds, ``-p seed 100``
against the default: ``book/measurements/seed_change.json``, on the same page), and to show that a
restructuring left every verdict where it was (a build before and after).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Sequence

from .. import results

RECORD = Path("book") / "measurements" / "precision.json"
"""The committed fp32-against-bf16 comparison, relative to the repository root."""

SEED_RECORD = Path("book") / "measurements" / "seed_change.json"
"""The committed yardstick for it: two fp32 builds whose replicates are other training seeds."""

GRADED_THE_SAME = ("key", "statistic", "direction", "sesoi")


def _inside(value: float | None, ci: Sequence | None) -> bool | None:
    if value is None or not ci or None in ci:
        return None
    return ci[0] <= value <= ci[1]


def compare_claims(base: dict, other: dict) -> list[dict]:
    """One row per claim of ``base`` (a chapter's results dict) that ``other`` graded the same way."""
    theirs = {c.get("key"): c for c in other.get("claims", []) if c.get("key")}
    rows = []
    for c in base.get("claims", []):
        o = theirs.get(c.get("key"))
        if o is None or any(c.get(k) != o.get(k) for k in GRADED_THE_SAME):
            continue
        rows.append({
            "chapter": base.get("chapter"), "key": c["key"], "claim": c.get("claim", ""),
            "setting": c.get("setting"), "statistic": c.get("statistic"),
            "base": {k: c.get(k) for k in ("estimate", "ci", "n", "verdict")},
            "other": {k: o.get(k) for k in ("estimate", "ci", "n", "verdict")},
            "other_inside_base": _inside(o.get("estimate"), c.get("ci")),
            "base_inside_other": _inside(c.get("estimate"), o.get("ci")),
            "same_verdict": c.get("verdict") == o.get("verdict"),
        })
    return rows


def _run(data: dict) -> dict:
    prov = data.get("provenance", {})
    return {"profile": data.get("profile"), "git_sha": prov.get("git_sha"), "started": prov.get("started"),
            "device": prov.get("device"), "training_precision": prov.get("training_precision", "fp32"),
            "seconds": data.get("runner", {}).get("seconds")}


def compare_folders(base: Path, other: Path, labels: tuple[str, str] = ("base", "other")) -> dict:
    """Compare every chapter found in both results folders; returns the record (see the module docstring)."""
    chapters, rows = {}, []
    for path in sorted(Path(base).glob("[0-9][0-9]_*.json")):
        if path.name.count(".") != 1:  # <id>.json only, not side runs
            continue
        twin = Path(other) / path.name
        if not twin.exists():
            continue
        a, b = json.loads(path.read_text()), json.loads(twin.read_text())
        chapters[path.stem] = {labels[0]: _run(a), labels[1]: _run(b)}
        rows += compare_claims(a, b)
    return {"labels": list(labels), "chapters": chapters, "claims": rows, "summary": summarise(rows)}


def summarise(rows: Sequence[dict]) -> dict:
    """How many compared claims (rows of :func:`compare_claims`) have the other estimate inside the base
    interval (of those with an interval) and the same verdict word."""
    judged = [r for r in rows if r["other_inside_base"] is not None]
    return {"claims": len(rows), "other_inside_base": sum(bool(r["other_inside_base"]) for r in judged),
            "with_interval": len(judged), "same_verdict": sum(r["same_verdict"] for r in rows)}


def _estimate(part: dict) -> str:
    est, ci = part.get("estimate"), part.get("ci") or [None, None]
    if est is None or (isinstance(est, float) and not math.isfinite(est)):
        return "n/a"
    return f"{est:+.3g}" + (f" [{ci[0]:+.3g}, {ci[1]:+.3g}]" if None not in ci else "")


def _mark(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "**no**")


def markdown(record: dict) -> list[str]:
    """The comparison as a Markdown table, one row a claim, with a one-line summary above it."""
    a, b = record["labels"]
    s = record["summary"]
    lines = [f"{s['other_inside_base']} of {s['with_interval']} claims with an interval: the {b} estimate lies inside "
             f"the {a} run's 95% interval; {s['same_verdict']} of {s['claims']} claims reach the same verdict.", "",
             f"| Chapter | Claim | {a}: estimate [95% CI], verdict | {b}: estimate [95% CI], verdict "
             f"| {b} inside {a}'s interval | same verdict |", "|---|---|---|---|---|---|"]
    for r in record["claims"]:
        name = r["claim"] + (f" ({r['setting']})" if r.get("setting") else "")
        lines.append(f"| {r['chapter']} | {name.replace('|', '/')} | {_estimate(r['base'])}, {r['base']['verdict']} "
                     f"| {_estimate(r['other'])}, {r['other']['verdict']} | {_mark(r['other_inside_base'])} "
                     f"| {_mark(r['same_verdict'])} |")
    return lines + [""]


def load_record(root: Path | None = None, record: Path = RECORD) -> dict | None:
    """A committed comparison (default: the precision one, :data:`RECORD`), or ``None`` when there is none."""
    return results.load_record(record, root)


def differing_verdicts(record: dict) -> list[str]:
    """The claims whose verdict words differ between the two builds: ``chapter: claim (setting): a -> b``."""
    return [f"{r['chapter']}: {r['claim']}" + (f" ({r['setting']})" if r.get("setting") else "")
            + f": {r['base']['verdict']} -> {r['other']['verdict']}" for r in record["claims"] if not r["same_verdict"]]


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m advbook.book.runcompare", description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, help="results folder of the base build (e.g. the fp32 quick build)")
    parser.add_argument("other", type=Path, help="results folder of the other build")
    parser.add_argument("--label-base", default="base")
    parser.add_argument("--label-other", default="other")
    parser.add_argument("-o", "--output", type=Path, help="write the record as JSON here")
    args = parser.parse_args(argv)
    for folder in (args.base, args.other):
        if not folder.is_dir():
            parser.error(f"{folder} is not a folder of results files")
    record = compare_folders(args.base, args.other, (args.label_base, args.label_other))
    if not record["claims"]:
        parser.error("the two folders share no claim graded the same way")
    print("\n".join(markdown(record)))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    _main()
