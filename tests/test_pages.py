"""What a chapter page shows: the cell-hiding rule (advbook.pages) on the source notebooks.

CONTRIBUTING.md, *Hiding cells*: a code cell stays visible only when it is short and calls
the method; every other cell carries hide-input, remove-input or remove-cell.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from advbook import pages

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _nb(*cells) -> dict:
    return {"cells": [{"cell_type": "code", "metadata": {"tags": list(tags)}, "source": src}
                      for src, tags in cells]}


@pytest.mark.parametrize("path", NOTEBOOKS + [ROOT / "lib" / "advbook" / "templates" / "chapter.ipynb"],
                         ids=lambda p: p.stem)
def test_source_notebooks_follow_the_hiding_rule(path):
    """Every chapter, and the scaffold that `advbook new` copies (so a new chapter starts compliant)."""
    assert pages.problems(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_chapter_keeps_some_code_visible(path):
    """Hiding is for bookkeeping: the short cells that call the method stay on the page."""
    nb = json.loads(path.read_text())
    visible = [c for c in nb["cells"] if c["cell_type"] == "code" and not pages.is_hidden(c)]
    assert visible, f"{path.name}: every code cell is hidden"


def test_statement_kinds():
    kind = lambda src: pages.cell_summary(src)["kinds"]  # noqa: E731
    assert kind('res.metric("a", 1)') == {"bookkeeping": 1}
    assert kind('g = res.grade(C["k"], [f(x) for x in xs], ours="...")') == {"bookkeeping": 1}
    assert kind('ch.glue("k", len(xs))') == {"bookkeeping": 1}
    assert kind("fig, axes = plt.subplots(1, 2)\naxes[0].plot(x, y)\nax.set(xlabel='e')") == {"plotting": 3}
    assert kind("for n in names:\n    ax.plot(c[n], label=n)") == {"plotting": 1}
    assert kind("curves = attacks.pgd(model, x, y, eps)") == {"method": 1}
    assert kind("for s in seeds:\n    ch.glue(f'k{s}', s)\n    m = zoo.train(s)") == {"method": 1}
    assert kind("labels = [f'{c}' for c in range(10)]\nimport torch") == {"neutral": 2}
    assert kind("def helper(x):\n    return x") == {"method": 1}


def test_rule_flags_long_and_bookkeeping_cells_and_accepts_tags():
    long_method = "\n".join(f"x{i} = attacks.pgd(m, x, y, {i})" for i in range(pages.MAX_VISIBLE_LINES + 1))
    bookkeeping = 'res.metric("a", a)\nch.glue("b", b)'
    plotting = "fig, ax = plt.subplots()\nax.plot(x, y)\nch.figure('f', fig)"
    short_method = "model = zoo.reference_models(ds, recipe)\nch.glue('n', 3)"
    found = pages.problems(_nb((long_method, ()), (bookkeeping, ()), (plotting, ()), (short_method, ()),
                               ("profile = 'auto'", ("parameters",))))
    assert len(found) == 4
    assert "cell 0" in found[0] and "lines of code" in found[0] and "hide-input" in found[0]
    assert "cell 1" in found[1] and "only bookkeeping" in found[1] and "remove-cell" in found[1]
    assert "cell 2" in found[2] and "remove-cell" in found[2]
    assert "cell 4" in found[3] and "hide-cell" in found[3]
    tagged = _nb((long_method, ("hide-input",)), (bookkeeping, ("remove-cell",)), (plotting, ("remove-cell",)),
                 (short_method, ()), ("profile = 'auto'", ("parameters", "hide-cell")))
    assert pages.problems(tagged) == []


def test_suggested_tag_follows_the_output():
    assert pages.suggested_tag("path = res.save()\ndisplay(Markdown(res.provenance_markdown()))") == "remove-input"
    assert pages.suggested_tag('res.metric("a", a)', has_visible_output=False) == "remove-cell"
    assert pages.suggested_tag("x = attacks.pgd(m, x, y, e)\n" * 20) == "hide-input"


# --- figures and exercises: cited from the text, numbered per chapter --------------------------

FIG_NAME = re.compile(r"```\{glue:figure\}[^\n]*\n(?::[a-z-]+:[^\n]*\n)*?:name: (\S+)")
NUMREF = re.compile(r"\{numref\}`(?:[^`<]*<)?([^`>]+)>?`")
DOUBLED = re.compile(r"(?i)\b(exercises?|figures?|fig\.)\s+\{(?:num)?ref\}`(?:ex|fig)-")


def _markdown(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def uncited_figures(markdown: str) -> list[str]:
    """The ``:name:`` of every ``{glue:figure}`` that no ``{numref}`` in ``markdown`` refers to."""
    cited = set(NUMREF.findall(markdown))
    return [name for name in FIG_NAME.findall(markdown) if name not in cited]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_is_cited_from_the_text(path):
    md = _markdown(path)
    assert FIG_NAME.findall(md), f"{path.name}: no glued figure found (has the directive changed?)"
    assert uncited_figures(md) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_doubled_word_before_a_numbered_reference(path):
    """``{numref}`` already writes "Exercise 5.1" / "Figure 5.1": "exercise {numref}..." doubles it."""
    assert [m.group(0) for m in DOUBLED.finditer(_markdown(path))] == []


def test_citation_rules_catch_what_they_should():
    md = "```{glue:figure} a\n:name: fig-a\n\nCaption.\n```\n```{glue:figure} b\n:figwidth: 100%\n:name: fig-b\n```\n"
    assert uncited_figures(md) == ["fig-a", "fig-b"]
    assert uncited_figures(md + "As {numref}`fig-a` and {numref}`Fig. %s <fig-b>` show") == []
    assert DOUBLED.search("and exercise {ref}`ex-05-beta` asks") and DOUBLED.search("see Figure {numref}`fig-a`")
    assert not DOUBLED.search("and {numref}`ex-05-beta` asks")


def test_figures_and_exercises_are_numbered_per_chapter():
    """numfig with one level of section numbers, and the papers' part numbered: "Figure 3.2", "Exercise 3.1"."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert config["numfig"] is True and config["numfig_secnum_depth"] == 1
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    numbered = [part for part in toc["parts"] if part.get("numbered")]
    assert [c["file"].split("/")[-1][:2] for part in numbered for c in part["chapters"]] == ["01", "02", "03", "04", "05"]
