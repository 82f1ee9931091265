"""advbook.book.report: the landing page's findings and the Reproducibility page's summary, from generated results.

Every test writes results files the way a chapter and the runner do (protocol records from
``protocol.grade``), so the verdicts on the pages are the protocol's, never typed here.
"""

from __future__ import annotations

import json
import re

import pytest

from advbook import paths, protocol
from advbook.book import report, sitecheck

CLAIM = protocol.Claim(key="gap", text="A beats B", quote="A beats B", source="abstract", statistic="A - B",
                       direction=1, sesoi=0.05, sesoi_reason="half the paper's gap", comparator="B",
                       unit="training seed", replicates="seeds")
OTHER = protocol.Claim(**{**CLAIM.__dict__, "key": "tail", "text": "C holds in the tail"})
INDEX = """# A book

## The chapters

| Chapter | Paper | The question |
|---|---|---|
| [Alpha](chapters/00_a.ipynb) | {cite:t}`alpha2020` | Does A beat B? |
| [Beta](chapters/01_b.ipynb) | {cite:t}`beta2021` | Is C in the tail? |
"""


def _record(claim, values):
    return protocol.assess(protocol.grade(claim, values)).record()


def _notebook(path, heading="## Claims and verdicts"):
    path.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": ["# Title\n"]},
                                          {"cell_type": "markdown", "source": [heading + "\n", "text"]}]}))


@pytest.fixture
def book(tmp_path, monkeypatch):
    root = tmp_path / "book-root"
    (root / "notebooks").mkdir(parents=True)
    (root / "book" / "measurements" / "runs").mkdir(parents=True)
    (root / "book" / "index.md").write_text(INDEX)
    for name in ("00_a", "01_b"):
        _notebook(root / "notebooks" / f"{name}.ipynb")
    monkeypatch.setenv("ADVBOOK_RESULTS", str(root / "results"))
    b = paths.Book(root)
    b.results.mkdir()
    return b


def _write(path, claims, profile="quick", sha="1234567890abcdef", finished="2026-12-03T09:22:12+0000",
           seconds=1705.6, cache=None, **extra):
    path.write_text(json.dumps({
        "chapter": path.name.split(".")[0], "title": "T", "profile": profile, "claims": claims,
        "provenance": {"git_sha": sha, "started": finished, "device": "CPU (1 thread)"},
        "runner": {"status": "ok", "seconds": seconds, "finished": finished, "execution": "executed", "key": "k"},
        "wall_seconds": seconds - 7, "cache": cache or {"hits": 3, "misses": 40}, **extra}))


def _summary(text):
    """The rows of the Reproducibility page's first table."""
    block = text.split("## Summary", 1)[1].split("```", 2)[1]
    return [line for line in block.splitlines() if line.startswith("| ")][1:]


def test_summary_puts_the_long_verdict_beside_this_builds_when_the_run_graded_the_same_key(book):
    quick = [_record(CLAIM, [0.01, -0.01, 0.02]), _record(OTHER, [0.3, 0.31, 0.29])]
    _write(book.results / "00_a.json", quick)
    _write(book.recorded / "00_a.long.json", [_record(CLAIM, [0.05, 0.06, 0.055, 0.052])], profile="long",
           sha="9a3118e7168b4eef")
    text = report.page_text(book)
    assert text.index("## Summary") < text.index("## Claims and verdicts") < text.index("## Chapter runs")
    rows = _summary(text)
    assert len(rows) == 2  # the two claims of 00_a; 01_b did not run and is named below the table
    gap, tail = rows
    assert [len(re.split(r"(?<!\\)\|", row)) - 2 for row in rows] == [5, 5]
    assert "No graded claims in this build: [Beta](chapters/01_b.ipynb#claims-and-verdicts)" in text
    assert quick[0]["verdict"] == "not reproduced" and "{bdg-warning}`not reproduced`" in gap
    assert "{bdg-success}`reproduced` (0.0542 [0.0473, 0.0612], n=4)" in gap  # the long run's own verdict
    assert "[Alpha](chapters/00_a.ipynb#claims-and-verdicts): {cite:t}`alpha2020`" in gap
    assert tail.startswith("|  | C holds in the tail |")  # the paper is named once per chapter
    assert "not recorded under the protocol" in tail  # the long run has no record of this key
    # one line of why: estimate, interval, no effect and SESOI on the statistic's scale, n
    assert "0.3 [0.275, 0.325] against no effect at 0 and the SESOI at 0.05; n = 3 training seeds" in tail
    assert "The long runs: Alpha: 28 min (1,706 s), recorded at 9a3118e, 2026-12-03." in text


def test_a_re_recorded_run_drops_in_without_code_changes(book):
    _write(book.results / "00_a.json", [_record(CLAIM, [0.01, -0.01, 0.02])])
    old = {"claim": "A beats B", "paper": "A beats B by 5 points", "ours": "4 points", "verdict": "reproduced"}
    _write(book.recorded / "00_a.long.json", [old], profile="long")
    assert "not recorded under the protocol" in _summary(report.page_text(book))[0]
    assert "was not recorded under the protocol" in report.findings_text(book)
    # the same file re-recorded under the protocol: the summary and the landing page pick it up
    _write(book.recorded / "00_a.long.json", [_record(CLAIM, [0.05, 0.06, 0.055, 0.052])], profile="long")
    assert "{bdg-success}`reproduced`" in _summary(report.page_text(book))[0].split(" | ")[3]
    assert "graded 1 of them and changed 1 verdict (1 to reproduced)" in report.findings_text(book)
    # the same key graded against another SESOI is not the same claim
    other = protocol.Claim(**{**CLAIM.__dict__, "sesoi": 0.2})
    _write(book.recorded / "00_a.long.json", [_record(other, [0.05, 0.06, 0.055, 0.052])], profile="long")
    assert "graded with another statistic or SESOI" in _summary(report.page_text(book))[0]
    (book.recorded / "00_a.long.json").unlink()
    assert "no long run recorded" in _summary(report.page_text(book))[0]


def test_a_recorded_runs_time_is_its_own_and_a_cached_re_execution_says_so(book):
    _write(book.results / "00_a.json", [_record(CLAIM, [0.01, -0.01, 0.02])], seconds=43.3)
    _write(book.recorded / "00_a.long.json", [_record(CLAIM, [0.02, 0.03, 0.01])], profile="long", seconds=17.2,
           sha="cd181505d277de51", finished="2026-11-23T05:43:08+0000", cache={"hits": 30, "misses": 0})
    text = report.page_text(book)
    runs = text.split("## Chapter runs", 1)[1]
    assert "| 43.3 s |" in runs  # this build's own time
    long_row = next(line for line in runs.splitlines() if "(long)" in line)
    assert ("17 s re-executing with all 30 results from the cache (not the cost of the run), recorded at cd18150, "
            "2026-11-23") in long_row
    assert "17 s re-executing" in text.split("## Summary", 1)[1].split("## Claims and verdicts")[0]
    # a run that computed its results: its own seconds, no caveat
    _write(book.recorded / "00_a.long.json", [], profile="long", seconds=2504.8, sha="50992ce9b352",
           finished="2026-11-23T06:17:12+0000", cache={"hits": 1, "misses": 23})
    assert "42 min (2,505 s), recorded at 50992ce, 2026-11-23" in report.page_text(book)
    assert report.run_seconds({"wall_seconds": 12.0}) == 12.0 and report.run_seconds({}) is None


def test_a_local_copy_of_a_recorded_run_is_labelled_recorded(book):
    claims = [_record(CLAIM, [0.05, 0.06, 0.055, 0.052])]
    _write(book.results / "00_a.json", [_record(CLAIM, [0.01, -0.01, 0.02])])
    _write(book.results / "00_a.long.json", claims, profile="long")
    assert "run on this machine at 1234567" in report.findings_text(book)  # not committed: said so
    _write(book.recorded / "00_a.long.json", claims, profile="long")  # the runner's committed copy of that run
    assert "recorded at 1234567, 2026-12-03" in report.findings_text(book)


def test_findings_count_each_papers_verdicts_in_one_generated_sentence(book):
    _write(book.results / "00_a.json", [_record(CLAIM, [0.1, 0.12, 0.11]), _record(OTHER, [0.01, -0.01, 0.02]),
                                        _record(OTHER.at("eps 0.3"), [-0.3, -0.31, -0.29])])
    _write(book.results / "01_b.json", [_record(OTHER, [0.2, -0.2])])
    text = report.findings_text(book)
    verdicts = [c["verdict"] for c in json.loads((book.results / "00_a.json").read_text())["claims"]]
    assert verdicts == ["reproduced", "not reproduced", "contradicted"]
    assert "graded 4 claims of 2 chapters: 1 reproduced, 1 not reproduced, 1 inconclusive, 1 contradicted" in text
    alpha = next(line for line in text.splitlines() if "[Alpha]" in line)
    assert alpha.startswith("* **[Alpha](chapters/00_a.ipynb#claims-and-verdicts)** ({cite:t}`alpha2020`): ")
    assert "{bdg-success}`1 reproduced` {bdg-warning}`1 not reproduced` {bdg-danger}`1 contradicted`." in alpha
    assert "partly" not in alpha  # a verdict that no claim reached is not counted
    # the sentence: the best and the least supported claim (a family's settings count together)
    assert ("Best supported: “A beats B” (reproduced). Least supported: “C holds in the tail” "
            "(not reproduced at 1 of 2 settings, contradicted at 1 of 2 settings).") in alpha
    beta = next(line for line in text.splitlines() if "[Beta]" in line)
    assert "{bdg-muted}`1 inconclusive`" in beta and "“C holds in the tail”: inconclusive." in beta
    assert "long run" not in beta  # no long run, nothing said about one
    # the key is the protocol's own text, not a copy
    assert protocol.verdict_key() in text
    for word in (*protocol.VERDICTS, *protocol.ASSESSMENTS):
        assert word in text


def test_pages_are_written_together_only_when_they_change(book):
    assert "No chapter has recorded graded claims" in report.findings_text(book)
    assert protocol.verdict_key() in report.findings_text(book)  # the key is there before any run
    _write(book.results / "00_a.json", [_record(CLAIM, [0.1, 0.12, 0.11])])
    page = report.write_page(book)
    findings = book.root / report.FINDINGS
    assert page.name == "reproducibility.md" and findings.read_text() == report.findings_text(book)
    mtimes = page.stat().st_mtime_ns, findings.stat().st_mtime_ns
    report.write_page(book)
    assert (page.stat().st_mtime_ns, findings.stat().st_mtime_ns) == mtimes


def test_claims_link_follows_the_rendered_heading_or_falls_back_to_the_page(book):
    assert report.claims_link(book, "00_a") == "chapters/00_a.ipynb#claims-and-verdicts"
    book.chapters.mkdir(parents=True)
    _notebook(book.chapters / "00_a.ipynb", "### Claims and verdicts: what held?")
    assert report.claims_link(book, "00_a") == "chapters/00_a.ipynb#claims-and-verdicts-what-held"
    _notebook(book.chapters / "00_a.ipynb", "## Results")  # no such heading: the page itself, never a dead anchor
    assert report.claims_link(book, "00_a") == "chapters/00_a.ipynb"
    assert report.claims_link(book, "09_missing") == "chapters/09_missing.ipynb"


def test_every_verdict_has_a_badge_and_a_rank():
    assert set(report.BADGE) == set(protocol.VERDICTS) == set(report.SUPPORT)
    assert sorted(protocol.VERDICTS, key=lambda v: -report.SUPPORT[v])[0] == "reproduced"


def test_the_summary_table_passes_the_site_checks_claims_rule(book):
    """Rendered by MyST's Markdown parser, every summary row has five cells and a verdict word in its verdict column."""
    markdown_it = pytest.importorskip("markdown_it")
    _write(book.results / "00_a.json", [_record(CLAIM, [0.01, -0.01, 0.02]),
                                        _record(OTHER.at("a | b"), [0.3, 0.31, 0.29])])  # a '|' in a setting
    _write(book.recorded / "00_a.long.json", [_record(CLAIM, [0.05, 0.06, 0.055, 0.052])], profile="long")
    block = report.page_text(book).split("## Summary", 1)[1].split("```", 2)[1]
    table = "\n".join(line for line in block.splitlines() if line.startswith("|"))
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(table)
    page = sitecheck.parse(html)
    assert len(page.tables) == 1 and len(page.tables[0]) == 3  # the header and two claims
    assert sitecheck.check_claims_tables(page) == []
    assert re.search(r"<td>[^<]*a \| b", html)  # the escaped '|' stayed inside its cell
