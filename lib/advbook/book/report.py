"""The book's *Reproducibility* page and the landing page's findings, generated from the results the chapters wrote.

:func:`write_page` reads ``<results>/<chapter>.json`` of every chapter (the chapter's
claims, metrics and provenance, plus the runner's status, time and cache key) and the
recorded side runs in ``book/measurements/runs`` (``<chapter>.long.json``), and writes

- ``book/reproducibility.md``, which opens with **one summary table**: every claim with this
  build's verdict, the verdict of the recorded ``long`` run where that run graded the same claim
  key (:func:`long_match`; "not recorded under the protocol" where it did not), a one-line why
  and a link to the chapter's claims; below it, the audit detail:

  - every claim beside the value measured in this build and its verdict (the protocol's table);
  - per chapter: status, profile, dataset, device, time, cache use, seed, git SHA, and
    whether it was *executed in this build* or *reused from build <time>, same inputs*
    (the chapter execution cache, :mod:`advbook.book.buildcache`); a recorded run's time is its own
    (``runner.seconds``), said as "recorded at <sha>, <date>", and a run that computed nothing
    (every result from the cache) is said to be a re-execution, not the cost of the run;
  - chapters with results for more than one profile (``<id>.json`` beside, say,
    ``<id>.long.json``): their claims side by side, one column per results file;
  - ``<results>/bench.json`` (rows of name / value / unit, written by ``advbook.tools.bench``), when
    present, as a *Benchmarks* section;

- ``book/findings.md`` (:data:`FINDINGS`, not tracked by git), which the landing page
  (``book/index.md``) includes: per paper, the counts of each verdict, one generated sentence
  (:func:`sentence`) and a link to the chapter's claims, then the key to the verdict and
  assessment words (:func:`advbook.protocol.verdict_key`, not restated here).

Both pages are rewritten only when their text changes, so Sphinx's incremental build skips them. A
re-recorded ``<chapter>.long.json`` drops in without code changes: its claims are matched by key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..protocol import claims_table, verdict_key

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
    runs, :func:`advbook.book.records.record_side_run`) is included with ``"recorded": True``; a run of
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
    if suffix:  # a side run: its own recorded time, where and when, and whether it computed anything
        seconds = side_run_time(data)
    elif isinstance(seconds, (int, float)):
        seconds = f"{seconds:g} s"
    cache = data.get("cache", {})
    trained = f"{cache.get('misses', '')} / {cache.get('hits', '')}" if cache else ""
    if cache.get("computed_seconds") is not None:  # the rest of the chapter's time is outside cached work
        trained += f" ({cache['computed_seconds']:.0f} s computing them)"
    name = f"[{chapter}](chapters/{chapter}.ipynb)" + (f" ({suffix})" if suffix else "")
    if data.get("recorded") and not runner.get("finished"):
        runner = {**runner, "finished": prov.get("started", "")}
    return (f"| {name} | {status} | {execution(runner, data.get('recorded', False))} | {data.get('profile', '')} | {data.get('dataset', '')} "
            f"| {_cell(prov.get('device', ''))} | {prov.get('training_precision', 'fp32')} | {seconds} | {trained} "
            f"| {data.get('seed', '')} "
            f"| `{short_sha(prov.get('git_sha', ''))}` |")


def side_by_side(chapter: str, found: dict[str, dict], title: str = "") -> list[str]:
    """One table: the chapter's claims (rows) in each results file (columns), under the chapter's title."""
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
    lines = [f"### {_cell(title)} ({chapter})" if title and title != chapter else f"### {chapter}", "", head, "|" + "---|" * (2 + len(order) + compare)]
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
    from ..protocol import VERDICTS

    chapters = list(dict.fromkeys(r.get("chapter", "") for r in records))
    lines = ["This build graded " + f"{len(records)} claims:", "",
             "| Chapter | " + " | ".join(VERDICTS) + " |", "|---|" + "---|" * len(VERDICTS)]
    for chapter in [*chapters, "all"]:
        rows = [r for r in records if chapter == "all" or r.get("chapter") == chapter]
        counts = [sum(r.get("verdict") == v for r in rows) for v in VERDICTS]
        name = "**all**" if chapter == "all" else chapter
        lines.append(f"| {name} | " + " | ".join(str(n) if n else "" for n in counts) + " |")
    return lines + [""]


# --------------------------------------------------------------------------- summaries

FINDINGS = Path("book") / "findings.md"
"""The landing page's generated findings (relative to the book's root), included by ``book/index.md``."""

SIDE = "long"
"""The side profile whose recorded run stands beside this build's verdicts in the summaries."""

SUPPORT = {"reproduced": 4, "partly reproduced": 3, "inconclusive": 2, "not reproduced": 1, "contradicted": 0}
"""How strongly a verdict supports the paper (the order of :func:`sentence`'s best and least supported)."""

BADGE = {"reproduced": "success", "partly reproduced": "info", "inconclusive": "muted",
         "not reproduced": "warning", "contradicted": "danger"}
"""The sphinx-design badge colour of each verdict (the word is always written out, so colour is never the only cue)."""

CLAIMS_HEADING = re.compile(r"^#{1,3}\s+(.*\bclaims and verdicts\b.*?)\s*#*\s*$", re.I | re.M)


def _slug(title: str) -> str:
    """The anchor MyST gives a heading (``myst_heading_anchors``): its own slug function where installed."""
    try:
        from myst_parser.mdit_to_docutils.base import default_slugify
    except ImportError:  # the same rule (GitHub's), for a checkout without the book's toolchain
        return re.sub(r"[^\w\- ]", "", title.lower().replace(" ", "-"))
    return default_slugify(title)


def claims_link(book, chapter: str) -> str:
    """The chapter page's link target, with the ``#anchor`` of its *Claims and verdicts* heading when the
    rendered copy (or, before a run, the source) has one; a missing anchor would fail the build."""
    for path in (book.chapters / f"{chapter}.ipynb", book.notebooks / f"{chapter}.ipynb"):
        try:
            cells = json.loads(path.read_text()).get("cells", [])
        except (OSError, ValueError):
            continue
        for cell in cells:
            if cell.get("cell_type") == "markdown":
                text = "".join(cell.get("source", ""))
                m = CLAIMS_HEADING.search(text)
                if m:
                    return f"chapters/{chapter}.ipynb#{_slug(m.group(1).strip())}"
        break
    return f"chapters/{chapter}.ipynb"


PAPER_ROW = re.compile(r"^\|\s*\[(?P<title>[^\]]+)\]\(chapters/(?P<id>[\w-]+)\.ipynb\)\s*\|(?P<paper>[^|]*)\|", re.M)


def papers(book) -> dict[str, tuple[str, str]]:
    """``{chapter: (title, paper)}`` from the chapter table of ``book/index.md`` (one place names each chapter's
    paper, with its ``{cite:t}`` roles); empty when the page has none."""
    try:
        text = book.page("index.md").read_text()
    except OSError:
        return {}
    return {m["id"]: (m["title"].strip(), m["paper"].strip()) for m in PAPER_ROW.finditer(text)}


def badge(verdict: Any) -> str:
    """A verdict as a coloured badge (sphinx-design's ``{bdg-*}`` role), the word itself as its text."""
    verdict = str(verdict or "")
    return f"{{bdg-{BADGE[verdict]}}}`{verdict}`" if verdict in BADGE else f"**{_cell(verdict)}**"


def when(data: dict) -> str:
    """The date a run finished (else started), ``YYYY-MM-DD``."""
    runner, prov = data.get("runner") or {}, data.get("provenance") or {}
    return str(runner.get("finished") or prov.get("started") or "")[:10]


def run_origin(data: dict) -> str:
    """``recorded at <sha>, <date>`` for a committed run, ``run on this machine at <sha>, <date>`` otherwise."""
    sha = short_sha((data.get("provenance") or {}).get("git_sha", ""), 7)
    where = "recorded" if data.get("recorded") else "run on this machine"
    return f"{where} at {sha or '?'}, {when(data) or '?'}"


def run_seconds(data: dict) -> float | None:
    """A run's own time: the runner's seconds (the chapter's kernel, start to end), else the notebook's
    ``wall_seconds``; ``None`` when neither was recorded."""
    runner = data.get("runner") or {}
    for value in (runner.get("seconds"), data.get("wall_seconds")):
        if isinstance(value, (int, float)):
            return float(value)
    return None


def from_cache_only(data: dict) -> bool:
    """Whether a run computed nothing (every model and result came from the cache): its time is that of a
    re-execution, not what the run costs on a cold cache."""
    cache = data.get("cache") or {}
    return bool(cache) and not cache.get("misses") and bool(cache.get("hits"))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min ({seconds:,.0f} s)"


def side_run_time(data: dict) -> str:
    """What a side run's time says: its own seconds and origin, or that it was a re-execution from the cache."""
    seconds = run_seconds(data)
    text = _duration(seconds) if seconds is not None else "time not recorded"
    if from_cache_only(data):
        text = (f"{text} re-executing with all {data['cache']['hits']} results from the cache "
                "(not the cost of the run)")
    return f"{text}, {run_origin(data)}"


def long_match(claim: dict, side: dict | None) -> tuple[str, dict | None]:
    """The side run's record of ``claim`` and what it is: ``("graded", record)`` when the run graded the same key
    with the same statistic, direction, null value and SESOI; ``("other rule", record)`` for the same key graded
    another way; ``("not recorded under the protocol", None)`` when the run has no such key (a run recorded
    before the protocol, or a new claim); ``("no run", None)`` without a side run."""
    if side is None:
        return "no run", None
    key = claim.get("key")
    for other in side.get("claims", []):
        if key is not None and other.get("key") == key and "statistic" in other:
            same = all(other.get(k) == claim.get(k) for k in ("statistic", "direction", "sesoi")) and \
                other.get("null_value", 0.0) == claim.get("null_value", 0.0)
            return ("graded" if same else "other rule"), other
    return "not recorded under the protocol", None


def _estimate(claim: dict) -> str:
    ci = claim.get("ci") or [None, None]
    est = claim.get("estimate")
    if est is None:
        return ""
    text = f"{est:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if None not in ci else "")
    return text + (f", n={claim['n']}" if claim.get("n") is not None else "")


def why(claim: dict) -> str:
    """One line: the estimate and its interval against no effect and the SESOI (both on the statistic's scale), n,
    and how many replicates would decide an *inconclusive* claim (from the protocol's reason)."""
    if claim.get("estimate") is None or "sesoi" not in claim:
        return _cell(claim.get("ours", "") or claim.get("reason", ""))
    null = claim.get("null_value", 0.0) or 0.0
    target = null + claim.get("direction", 1) * claim["sesoi"]
    ci = claim.get("ci") or [None, None]
    n, unit = claim.get("n"), claim.get("unit", "")
    text = f"{claim['estimate']:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if None not in ci else "")
    text += f" against no effect at {null:g} and the SESOI at {target:g}"
    if n is not None:
        text += f"; n = {n} {unit}{'s' if unit and n != 1 else ''}"
    decide = re.search(r"about \d+ [\w ]+? would decide", str(claim.get("reason") or ""))
    return _cell(text + (f"; {decide.group(0)}" if decide else ""))


def _name(claim: dict) -> str:
    return claim.get("claim", "") + (f" ({claim['setting']})" if claim.get("setting") else "")


def _verdict_short(claim: dict) -> str:
    """A badge, and the assessment in words when there is one."""
    text = badge(claim.get("verdict"))
    return text + (f" {_cell(claim['assessment'])}" if claim.get("assessment") else "")


def long_cell(claim: dict, side: dict | None) -> str:
    """The summary table's cell for the recorded side run's verdict of ``claim``."""
    how, other = long_match(claim, side)
    if how == "graded":
        return f"{_verdict_short(other)} ({_estimate(other)})"
    if how == "other rule":
        return f"graded with another statistic or SESOI: {badge(other.get('verdict'))}"
    return "no long run recorded" if how == "no run" else how


def chapters(book) -> list[dict]:
    """Per chapter: id, title, paper, claims link, this build's results (``main``, or ``None``) and the side run."""
    named = papers(book)
    out = []
    for chapter in book.available():
        found = variants(book.results, chapter, getattr(book, "recorded", None))
        main = found.get("")
        title, paper = named.get(chapter, ("", ""))
        title = title or (main or {}).get("title") or chapter
        side = found.get(SIDE)
        recorded = getattr(book, "recorded", None)
        if side is not None and not side.get("recorded") and recorded is not None:
            copy = _load(recorded / f"{chapter}.{SIDE}.json")  # the committed copy of this same run
            if copy and (copy.get("runner") or {}).get("key") == (side.get("runner") or {}).get("key") \
                    and when(copy) == when(side):
                side = {**copy, "recorded": True}
        out.append({"id": chapter, "title": title, "paper": paper, "link": claims_link(book, chapter),
                    "main": main, "side": side})
    return out


def summary_table(rows: list[dict]) -> list[str]:
    """The Reproducibility page's first table: one row per claim of this build, beside the side run's verdict (a
    ``{table}`` with the class ``advbook-summary``, styled by ``_static/advbook-summary.css``)."""
    profiles = sorted({(r["main"] or {}).get("profile") or "" for r in rows if r["main"]} - {""})
    head = f"this build ({', '.join(profiles)})" if profiles else "this build"
    lines = ["```{table}", ":class: advbook-summary", ":widths: 15 29 15 15 26", "",
             f"| Paper | Claim | Verdict, {head} | Verdict, {SIDE} run | Why (this build) |",
             "|---|---|---|---|---|"]
    for r in rows:
        paper = f"[{_cell(r['title'])}]({r['link']})" + (f": {r['paper']}" if r["paper"] else "")
        for i, c in enumerate((r["main"] or {}).get("claims", [])):
            lines.append(f"| {paper if i == 0 else ''} | {_cell(_name(c))} | {_verdict_short(c)} "
                         f"| {long_cell(c, r['side'])} | {why(c)} |")
    lines.append("```")
    missing = [f"[{_cell(r['title'])}]({r['link']})" for r in rows if not r["main"] or not r["main"].get("claims")]
    if missing:
        lines += ["", "No graded claims in this build: " + ", ".join(missing) + " (see *Chapter runs*)."]
    notes = [f"{_cell(r['title'])}: {side_run_time(r['side'])}" for r in rows if r["side"]]
    if notes:
        lines += ["", f"The {SIDE} runs: " + "; ".join(notes) + "."]
    return lines + [""]


def _family_summary(verdicts: list[str]) -> str:
    if len(verdicts) == 1:
        return verdicts[0]
    counts = {v: verdicts.count(v) for v in sorted(set(verdicts), key=lambda v: -SUPPORT.get(v, -1))}
    return ", ".join(f"{v} at {n} of {len(verdicts)} settings" for v, n in counts.items())


def sentence(claims: list[dict], side: dict | None = None) -> str:
    """One generated sentence on a chapter's graded claims: the best and the least supported claim (claims of one
    family, the same claim at several settings, count together), then what the recorded side run changed."""
    if not claims:
        return "No claim was graded."
    families: dict[str, list[str]] = {}
    for c in claims:
        families.setdefault(c.get("claim", ""), []).append(c.get("verdict", ""))
    score = {text: sum(SUPPORT.get(v, -1) for v in vs) / len(vs) for text, vs in families.items()}
    best = max(families, key=lambda t: score[t])
    worst = min(families, key=lambda t: score[t])
    if len(families) == 1:
        text = f"“{best}”: {_family_summary(families[best])}."
    elif score[best] == score[worst]:
        text = f"All {len(families)} claims fare alike: " + "; ".join(
            f"“{t}”: {_family_summary(vs)}" for t, vs in families.items()) + "."
    else:
        text = (f"Best supported: “{best}” ({_family_summary(families[best])}). "
                f"Least supported: “{worst}” ({_family_summary(families[worst])}).")
    if side is not None:
        pairs = [(c, long_match(c, side)) for c in claims]
        graded = [(c, o) for c, (how, o) in pairs if how == "graded"]
        if not graded:
            sha = short_sha((side.get("provenance") or {}).get("git_sha", ""), 7) or "?"
            text += f" The {SIDE} run of {sha} ({when(side) or '?'}) was not recorded under the protocol."
        else:
            moved = [o.get("verdict") for c, o in graded if c.get("verdict") != o.get("verdict")]
            to = sorted(set(moved), key=lambda v: -SUPPORT.get(v, -1))
            text += (f" The {SIDE} run ({run_origin(side)}) graded {len(graded)} of them and changed "
                     + (f"{len(moved)} verdict{'s' if len(moved) != 1 else ''} ("
                        + ", ".join(f"{moved.count(v)} to {v}" for v in to) + ")" if moved else "no verdict") + ".")
    return _cell(text)


def counts_badges(claims: list[dict]) -> str:
    """``{bdg-success}`2 reproduced` {bdg-info}`1 partly reproduced` ...``: each verdict that occurs, with its count."""
    from ..protocol import VERDICTS

    counts = [(v, sum(c.get("verdict") == v for c in claims)) for v in VERDICTS]
    return " ".join(f"{{bdg-{BADGE[v]}}}`{n} {v}`" for v, n in counts if n) or "no graded claim"


def findings_text(book) -> str:
    """The landing page's findings (``book/findings.md``): per paper, the count of each verdict, one generated
    sentence and a link to the chapter's claims; then the key to the verdict and assessment words."""
    from ..protocol import VERDICTS, verdict_key

    rows = chapters(book)
    graded = [c for r in rows if r["main"] for c in r["main"].get("claims", [])]
    key = ["", "The verdict words, and the assessment that a verdict short of *reproduced* carries:", "",
           verdict_key(), ""]
    if not graded:
        return "\n".join(["No chapter has recorded graded claims in this build yet: `make book` runs the chapters, "
                          "and this section then counts their verdicts.", *key])
    mains = [r["main"] for r in rows if r["main"]]
    profiles = sorted({m.get("profile") or "?" for m in mains})
    total = {v: sum(c.get("verdict") == v for c in graded) for v in VERDICTS}
    lines = [f"This build ran the {', '.join(profiles)} profile and graded {len(graded)} claims of {len(mains)} "
             "chapters: " + ", ".join(f"{n} {v}" for v, n in total.items() if n) + ". Per paper (each name links to "
             "the chapter's claims; the [Reproducibility](reproducibility.md) page lists every claim with its numbers "
             f"beside the recorded `{SIDE}` run):", ""]
    for r in rows:
        name = f"**[{_cell(r['title'])}]({r['link']})**" + (f" ({r['paper']})" if r["paper"] else "")
        if not r["main"]:
            lines.append(f"* {name}: not run in this build.")
            continue
        claims = r["main"].get("claims", [])
        lines.append(f"* {name}: {counts_badges(claims)}. {sentence(claims, r['side'])}")
    return "\n".join(lines + key)


def _write_if_changed(path: Path, text: str) -> Path:
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def benchmarks(results: Path) -> list[str]:
    """The *Benchmarks* section from ``bench.json`` (a list of rows, or ``{"rows": [...], ...}``)."""
    path = results / "bench.json"
    if not path.exists():
        return []
    data = _load(path)
    rows = data.get("rows", []) if isinstance(data, dict) else data
    meta = {k: v for k, v in data.items() if k != "rows" and not isinstance(v, (dict, list))} if isinstance(data, dict) else {}
    lines = ["## Benchmarks", "", "Throughput measured by `make bench` (`advbook.tools.bench`) on the machine that built the book"
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


def arithmetic_section(root: Path | None) -> list[str]:
    """*Training in bf16 against fp32*: the committed comparison of two quick builds (:mod:`advbook.book.runcompare`)."""
    from .runcompare import RECORD, load_record, markdown

    record = load_record(root)
    if not record:
        return []
    a, b = record["labels"]
    runs = [run for pair in record["chapters"].values() for run in pair.values()]
    shas = sorted({short_sha(r.get("git_sha", ""), 10) for r in runs})
    dates = sorted(str(r.get("started") or "")[:10] for r in runs)
    return ["## Training in bf16 against fp32", "",
            "Every chapter trains in `fp32` unless run with `-p precision bf16` (or `auto`: bf16 where the machine",
            "has it natively, faster on such a CPU: `make bench` measures both). Whether bf16 may become the",
            "default is decided by this comparison: two quick builds of every chapter, one in each arithmetic,",
            f"recorded on {dates[0] if dates else '?'} at {', '.join(f'`{s}`' for s in shas)} (`{RECORD.as_posix()}`,",
            "written by `python -m advbook.book.runcompare`), each claim's estimate and interval side by side. The",
            "condition for bf16 was that every bf16 estimate lie inside the fp32 run's interval; where one does not,",
            "or a verdict word differs, the default stays `fp32`. The training seeds are the same in both builds, so",
            "a difference is what the arithmetic changes in training, which can act like a change of seed.", "",
            *seed_yardstick(root, record), *markdown(record)]


def seed_yardstick(root: Path | None, precision_record: dict) -> list[str]:
    """The paragraph that sets the bf16 comparison (``precision_record``) beside a change of training seeds
    alone (the committed :data:`advbook.book.runcompare.SEED_RECORD`), over the chapters both cover; nothing
    when the yardstick is not recorded."""
    from .runcompare import SEED_RECORD, differing_verdicts, load_record, summarise

    record = load_record(root, SEED_RECORD)
    if not record:
        return []
    a, b = record["labels"]
    s = record["summary"]
    moved = differing_verdicts(record)
    chapters = ", ".join(c.split("_")[0] for c in record["chapters"])
    same = summarise([r for r in precision_record["claims"] if r["chapter"] in record["chapters"]])
    pa, pb = precision_record["labels"]
    return [f"For scale, a change of seed alone: two fp32 quick builds of chapters {chapters} whose replicates are",
            f"other training seeds ({a} and {b}; `{SEED_RECORD.as_posix()}`): {s['other_inside_base']} of "
            f"{s['with_interval']} estimates of the {b} build lie inside the {a} build's 95% interval and "
            f"{s['same_verdict']} of {s['claims']} claims reach the same verdict. Over the same chapters, the {pb} "
            f"build against the {pa} one: {same['other_inside_base']} of {same['with_interval']} inside, "
            f"{same['same_verdict']} of {same['claims']} the same verdict. A {pb} difference no larger than a change "
            "of seed is one a rerun with other seeds would show as well."
            + (" The verdicts a change of seed moved:" if moved else ""), "",
            *[f"- {line}" for line in moved], ""]


def page_text(book) -> str:
    """The Markdown of the reproducibility page for a :class:`advbook.paths.Book`."""
    records, status_rows, multi, versions = [], [], [], ""
    rows = chapters(book)
    for r in rows:
        chapter = r["id"]
        found = variants(book.results, chapter, getattr(book, "recorded", None))
        if "" not in found:
            status_rows.append(f"| {chapter} | not run | | | | | | | | | |")
        for suffix, data in found.items():
            status_rows.append(_run_row(chapter, suffix, data))
        if "" in found:
            records += [{**c, "chapter": chapter} for c in found[""].get("claims", [])]
            prov = found[""].get("provenance", {})
            if prov and not versions:
                versions = ", ".join(f"{k} {prov[k]}" for k in VERSION_KEYS if k in prov)
        if len(found) > 1:
            multi += side_by_side(chapter, found, r["title"])
    text = [
        "# Reproducibility",
        "",
        "Every claim the book grades, with the verdict of the build that rendered this site and, beside it, the",
        f"verdict of the recorded `{SIDE}` run of the same claim where there is one. The audit detail follows the",
        "summary: how each claim was graded, each chapter's runs, and each run's claims beside the others'.",
        "",
        "## Summary",
        "",
        *(summary_table(rows) if records else ["No chapter has recorded claims yet.", ""]),
        "The verdict words:",
        "",
        verdict_key(),
        "",
        "## Claims and verdicts",
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
        *findings(records),
        "The profile, dataset, device and time of each chapter's run are in the next section.",
        "",
        claims_table(records, chapter_column=True) if records else "No chapter has recorded claims yet.",
        "",
        "## Chapter runs",
        "",
        "| Chapter | Status | Execution | Profile | Dataset | Device | Training | Time | Computed / from cache | Seed "
        "| Git SHA |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *status_rows,
        "",
        f"Package versions: {versions or 'no chapter has run yet'}.",
        "",
        "*Computed / from cache* counts the models and expensive results each chapter computed in",
        "its run versus loaded from the cache (keyed by configuration, data and the code that computes "
        "them), with the seconds spent computing them (the rest of the chapter's time is kernel start,",
        "imports, data, evaluation outside the cache and figures): a rebuild with a warm cache and unchanged",
        "code computes none. The time of a recorded run is",
        "the one it recorded; a run that computed nothing re-executed from a warm cache, and its time is not",
        "what the run costs. *Training* is the arithmetic of training and perturbation fitting",
        "(`advbook.precision`: `bf16` autocast where the device has it natively, else `fp32`; runs recorded",
        "before the switch existed trained in `fp32`); every attack that grades a claim runs in `fp32`.",
        "",
        *arithmetic_section(getattr(book, "root", None)),
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
    """Write ``book/reproducibility.md`` and the landing page's ``book/findings.md`` (each only when its text
    changed); returns the reproducibility page's path."""
    _write_if_changed(book.root / FINDINGS, findings_text(book))
    return _write_if_changed(book.page("reproducibility.md"), page_text(book))
