"""The book's *Reproducibility* page, generated from the results the chapters wrote.

:func:`write_page` reads ``<results>/<chapter>.json`` of every chapter (the chapter's
claims, metrics and provenance, plus the runner's status, time and cache key) and writes
``book/reproducibility.md`` with

- every claim beside the value measured in this build and its verdict;
- per chapter: status, profile, dataset, device, time, cache use, seed, git SHA, and
  whether it was *executed in this build* or *reused from build <time>, same inputs*
  (the chapter execution cache, :mod:`advbook.buildcache`);
- chapters with results for more than one profile (``<id>.json`` beside, say,
  ``<id>.long.json``): their claims side by side, one column per results file;
- ``<results>/bench.json`` (rows of name / value / unit, written by ``advbook.bench``), when
  present, as a *Benchmarks* section.

The page is rewritten only when its text changes, so Sphinx's incremental build skips it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .protocol import claims_table, verdict_key

VERSION_KEYS = ("python", "torch", "torchvision", "numpy", "advbook")


def short_sha(sha: Any, n: int = 12) -> str:
    """The first ``n`` hex digits of a git SHA, keeping the ``-dirty`` mark of an uncommitted tree."""
    sha = str(sha or "")
    return sha[:n] + ("-dirty" if sha.endswith("-dirty") else "")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def variants(results: Path, chapter: str, recorded: Path | None = None) -> dict[str, dict]:
    """The results files of one chapter: ``""`` for ``<id>.json``, ``"long"`` for ``<id>.long.json``...

    A side run found only in ``recorded`` (``book/measurements/runs``: committed copies of ``long``
    runs, :func:`advbook.runner.record_side_run`) is included with ``"recorded": True``; a run of
    the same profile on this machine (in ``results``) takes precedence.
    """
    found = {}
    main = results / f"{chapter}.json"
    if main.exists():
        found[""] = _load(main)
    for root, is_record in ((results, False), (recorded, True)):
        if root is None or not root.is_dir():
            continue
        for path in sorted(root.glob(f"{chapter}.*.json")):
            suffix = path.name[len(chapter) + 1:-len(".json")]
            if suffix and re.fullmatch(r"[\w-]+", suffix) and suffix not in found:
                found[suffix] = {**_load(path), "recorded": is_record}
    return found


def _label(suffix: str, data: dict) -> str:
    profile = data.get("profile") or data.get("parameters", {}).get("profile") or ""
    if not suffix:
        return f"this build ({profile})" if profile else "this build"
    label = f"{suffix} ({profile})" if profile and profile != suffix else suffix
    if data.get("recorded"):
        when = data.get("runner", {}).get("finished") or data.get("provenance", {}).get("started", "")
        label += f", recorded run {when} at {short_sha(data.get('provenance', {}).get('git_sha', ''), 10)}".rstrip()
    return label


def execution(runner: dict, recorded: bool = False) -> str:
    """``executed in this build``, ``reused from build <time>, same inputs`` or, for a committed
    side run, ``recorded run of <time>, not executed in this build``."""
    if recorded:
        return f"recorded run of {runner.get('finished') or '?'}, not executed in this build"
    if not runner:
        return ""
    if runner.get("execution") == "reused":
        return f"reused from build {runner.get('built', '?')}, same inputs"
    if runner.get("execution") == "executed":
        return "executed in this build"
    return ""


def _measured(claim: dict) -> str:
    """What a claim measured: a protocol claim's estimate, interval and n, else the old free text."""
    if claim.get("estimate") is None:
        return claim.get("ours", "")
    ci = claim.get("ci") or [None, None]
    text = f"{claim['estimate']:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if None not in ci else "")
    return text + f", n={claim.get('n')} {claim.get('unit', '')}s"


def _verdict(claim: dict) -> str:
    text = f"**{claim.get('verdict', '')}**"
    if claim.get("assessment"):
        text += f": {claim['assessment']}"
    return text


def _run_row(chapter: str, suffix: str, data: dict) -> str:
    prov = data.get("provenance", {})
    runner = data.get("runner", {})
    status = runner.get("status", "ok")
    seconds = runner.get("seconds", data.get("wall_seconds", ""))
    cache = data.get("cache", {})
    trained = f"{cache.get('misses', '')} / {cache.get('hits', '')}" if cache else ""
    name = f"[{chapter}](chapters/{chapter}.ipynb)" + (f" ({suffix})" if suffix else "")
    if data.get("recorded") and not runner.get("finished"):
        runner = {**runner, "finished": prov.get("started", "")}
    return (f"| {name} | {status} | {execution(runner, data.get('recorded', False))} | {data.get('profile', '')} | {data.get('dataset', '')} "
            f"| {_cell(prov.get('device', ''))} | {seconds} | {trained} | {data.get('seed', '')} "
            f"| `{short_sha(prov.get('git_sha', ''))}` |")


def side_by_side(chapter: str, found: dict[str, dict]) -> list[str]:
    """One table: the chapter's claims (rows) in each results file (columns)."""
    order = list(found)
    claims: dict[str, dict[str, dict]] = {}
    papers: dict[str, str] = {}
    names: dict[str, str] = {}
    for suffix in order:
        for c in found[suffix].get("claims", []):
            key = c.get("key") or c.get("claim", "")  # protocol claims by their declared key
            claims.setdefault(key, {})[suffix] = c
            papers.setdefault(key, f"\"{c['quote']}\" ({c.get('source', '')})" if "quote" in c else c.get("paper", ""))
            names.setdefault(key, c.get("claim", "") + (f" ({c['setting']})" if c.get("setting") else ""))
    larger = [s for s in order if s]  # side profiles (``long``) are the larger runs
    moved = {text: "; ".join(f"{s}: {m}" if len(larger) > 1 else m for s in larger
                             if (m := _movement(per.get(""), per.get(s)))) for text, per in claims.items()}
    compare = any(moved.values())
    head = "| Claim | Paper | " + " | ".join(_cell(_label(s, found[s])) for s in order)
    head += " | Larger run against this build |" if compare else " |"
    lines = [f"### {chapter}", "", head, "|" + "---|" * (2 + len(order) + compare)]
    for text, per in claims.items():
        cells = [f"{_cell(_measured(per[s]))}: {_verdict(per[s])}" if s in per else "" for s in order]
        if compare:
            cells.append(_cell(moved[text]))
        lines.append(f"| {_cell(names[text])} | {_cell(papers[text])} | " + " | ".join(cells) + " |")
    if not claims:
        lines.append("| no recorded claims | |" + " |" * len(order))
    return lines + [""]


def _movement(base: dict | None, other: dict | None) -> str:
    """How the larger run's estimate compares with this build's, for a claim both graded the same way
    (empty otherwise: runs recorded before the protocol, or another statistic or SESOI)."""
    if not base or not other or "statistic" not in base:
        return ""
    return _protocol_movement(base, other)


def _protocol_movement(base: dict, other: dict) -> str:
    """Estimate and interval of a protocol claim in this build and in the larger run, when both graded the
    same statistic against the same SESOI (else empty: the two do not compare)."""
    keys = ("key", "statistic", "direction", "sesoi")
    if any(base.get(k) != other.get(k) for k in keys) or base.get("estimate") is None or other.get("estimate") is None:
        return ""

    def est(c: dict) -> str:
        ci = c.get("ci") or [None, None]
        return f"{c['estimate']:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if None not in ci else "") + f" (n={c.get('n')})"

    effect = base["direction"] * (other["estimate"] - base["estimate"])
    return (f"{est(base)} -> {est(other)}: {effect:+.3g} toward the SESOI {base['sesoi']:g}, "
            f"{base.get('verdict')} -> {other.get('verdict')}")


def findings(records: list[dict]) -> list[str]:
    """How many claims of each chapter reached each verdict in this build: a table, one row a chapter."""
    if not records:
        return []
    from .protocol import VERDICTS

    chapters = list(dict.fromkeys(r.get("chapter", "") for r in records))
    lines = ["This build graded " + f"{len(records)} claims:", "",
             "| Chapter | " + " | ".join(VERDICTS) + " |", "|---|" + "---|" * len(VERDICTS)]
    for chapter in [*chapters, "all"]:
        rows = [r for r in records if chapter == "all" or r.get("chapter") == chapter]
        counts = [sum(r.get("verdict") == v for r in rows) for v in VERDICTS]
        name = "**all**" if chapter == "all" else chapter
        lines.append(f"| {name} | " + " | ".join(str(n) if n else "" for n in counts) + " |")
    return lines + [""]


def benchmarks(results: Path) -> list[str]:
    """The *Benchmarks* section from ``bench.json`` (a list of rows, or ``{"rows": [...], ...}``)."""
    path = results / "bench.json"
    if not path.exists():
        return []
    data = _load(path)
    rows = data.get("rows", []) if isinstance(data, dict) else data
    meta = {k: v for k, v in data.items() if k != "rows" and not isinstance(v, (dict, list))} if isinstance(data, dict) else {}
    lines = ["## Benchmarks", "", "Throughput measured by `make bench` (`advbook.bench`) on the machine that built the book"
             + (": " + ", ".join(f"{k} {_cell(v)}" for k, v in meta.items()) if meta else "") + ".", "",
             "| Benchmark | Value | Unit |", "|---|---|---|"]
    for row in rows or []:
        if isinstance(row, dict):
            name, value, unit = row.get("name", ""), row.get("value", ""), row.get("unit", "")
        else:
            name, value, unit = (list(row) + ["", "", ""])[:3]
        if isinstance(value, float):
            value = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
        lines.append(f"| {_cell(name)} | {value} | {_cell(unit)} |")
    if not rows:
        lines.append("| bench.json holds no rows | | |")
    return lines + [""]


def page_text(book) -> str:
    """The Markdown of the reproducibility page for a :class:`advbook.runner.Book`."""
    records, status_rows, multi, versions = [], [], [], ""
    for chapter in book.available():
        found = variants(book.results, chapter, getattr(book, "recorded", None))
        if "" not in found:
            status_rows.append(f"| {chapter} | not run | | | | | | | | |")
        for suffix, data in found.items():
            status_rows.append(_run_row(chapter, suffix, data))
        if "" in found:
            records += [{**c, "chapter": chapter} for c in found[""].get("claims", [])]
            prov = found[""].get("provenance", {})
            if prov and not versions:
                versions = ", ".join(f"{k} {prov[k]}" for k in VERSION_KEYS if k in prov)
        if len(found) > 1:
            multi += side_by_side(chapter, found)
    text = [
        "# Reproducibility",
        "",
        "Every number on this page was produced by the build that rendered this site: each chapter",
        "was executed with papermill and wrote a results file, and this page was generated from those",
        "files (the one exception is labelled where it appears: *recorded* `long` runs, see *Profiles side",
        "by side*). Every claim is declared in the library before it is measured (`advbook.methods.<paper>.CLAIMS`)",
        "and graded by one function (`advbook.protocol.grade`) from the 95% interval over its unit of replication.",
        "A chapter whose notebook, parameters, library code and package versions are all unchanged since",
        "an earlier build is not executed again: the *Execution* column says so, with the time of the",
        "build that produced its outputs.",
        "",
        "## Claims and verdicts",
        "",
        *findings(records),
        "The profile, dataset, device and time of each chapter's run are in the next table. The verdict words:",
        "",
        verdict_key(),
        "",
        claims_table(records, chapter_column=True) if records else "No chapter has recorded claims yet.",
        "",
        "## Chapter runs",
        "",
        "| Chapter | Status | Execution | Profile | Dataset | Device | Time (s) | Computed / from cache | Seed | Git SHA |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *status_rows,
        "",
        f"Package versions: {versions or 'no chapter has run yet'}.",
        "",
        "*Computed / from cache* counts the models and expensive results each chapter computed in",
        "its run versus loaded from the cache (keyed by configuration, data and the code that computes "
        "them): a rebuild with a warm cache and unchanged code computes none.",
        "",
    ]
    if multi:
        text += ["## Profiles side by side", "",
                 "Chapters with results from more than one profile: each claim as measured in each run. The `long`",
                 "profile tests a claim at the largest scale that fits 30-60 minutes on 2 CPU cores",
                 "(`advbook run 03 --profile long`). A column marked *recorded run* was not executed by the build",
                 "that rendered this page: it is the results file of a `long` run, kept in",
                 "`book/measurements/runs/` with the date and git SHA of the code that produced it.", "",
                 "The last column compares the estimates of a claim that both runs graded with the same statistic",
                 "and SESOI, and how far the larger run moved toward the SESOI; the chapters derive their",
                 "assessments (*scale-limited*, *no trend with scale*) from the same comparison. Runs recorded",
                 "before the replication protocol graded other statistics and leave it empty.", "",
                 *multi]
    text += benchmarks(book.results)
    return "\n".join(text)


def write_page(book) -> Path:
    """Write ``book/reproducibility.md`` (only when its text changed); returns its path."""
    page = book.root / "book" / "reproducibility.md"
    text = page_text(book)
    if not page.exists() or page.read_text() != text:
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(text)
    return page
