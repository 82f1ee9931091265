"""What a chapter page shows: the cell-hiding rule (advbook.book.pages) on the source notebooks.

CONTRIBUTING.md, *Hiding cells*: a code cell stays visible only when it is short and calls
the method; every other cell carries hide-input, remove-input or remove-cell.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

from advbook.book import pages

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _nb(*cells) -> dict:
    return {"cells": [{"cell_type": "code", "metadata": {"tags": list(tags)}, "source": src}
                      for src, tags in cells]}


@pytest.mark.parametrize("path", NOTEBOOKS + [ROOT / "lib" / "advbook" / "book" / "templates" / "chapter.ipynb"],
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


# --- figures legible at the rendered width (advbook.plots, equation (1)) ------------------------

SMALL_FONT_NAMES = {"xx-small", "x-small", "small", "smaller"}


def test_rendered_size_equation():
    from advbook import plots

    # a 6.4 in figure at 110 dpi is 704 px: shown at its own size, 1 pt = 110/96 CSS pt
    assert plots.rendered_pt(9, 6.4) == pytest.approx(9 * 110 / 96)
    # the review's case: a 3-panel 11 in figure with 7 pt legends shrinks to 720 px: 7 * 7.5 / 11 pt
    assert plots.rendered_pt(7, 11) == pytest.approx(7 * 7.5 / 11)
    assert plots.rendered_pt(7, 11) < plots.MIN_TEXT_PT
    # the house limits: the smallest house font in the widest house figure reaches 9 pt
    assert plots.rendered_pt(plots.SMALL_PT, plots.MAX_WIDTH_IN) >= plots.MIN_TEXT_PT - 1e-9
    assert min(plots.FONT_SIZES.values()) >= plots.SMALL_PT


def _house_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from advbook import plots

    plots.use_style()
    figs = {}
    fig, axes = plots.panels(2, height=3.2)
    for ax in axes:
        ax.plot([0, 1, 2], [0.1, 0.5, 0.9], marker="o", label="adversarial (PGD)")
        ax.set(xlabel="epoch", ylabel="accuracy on training inputs", title="Training accuracy")
    axes[0].legend()
    fig.tight_layout()
    figs["two panels"] = fig
    fig, axes = plots.panels(5, ncols=3, height=2.6, sharey=True)
    for ax in axes:
        ax.bar(range(10), range(10))
        ax.set_title("dominant (logits)\nD = 0.52, D_move = 0.40", fontsize=plots.SMALL_PT)
    fig.suptitle("Predicted classes under each pattern")
    fig.tight_layout()
    figs["five panels in rows"] = fig
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="x")
    ax.legend()
    figs["default size"] = fig
    imgs = torch.rand(16, 1, 28, 28)
    figs["2x8 grid"] = plots.image_grid(imgs, 2, 8, titles=[f"clean: {i % 10}" for i in range(16)], size=1.4,
                                        suptitle="Standard model, PGD-40 at eps = 0.3")
    figs["11x11 grid with row labels"] = plots.image_grid(torch.rand(121, 1, 8, 8), 11, 11, size=1.25,
                                                          titles=["logits \u2193 / nuisance \u2192"] + ["F:4 CNN:9"] * 120,
                                                          row_labels=[f"row {i}" for i in range(11)])
    return figs


def test_house_figures_are_legible_at_the_column_width():
    import matplotlib.pyplot as plt

    from advbook import plots

    for name, fig in _house_figures().items():
        smallest = plots.legibility(fig)[0]
        assert smallest[1] >= plots.MIN_TEXT_PT - 1e-6, (name, smallest)
        plt.close(fig)


def test_legibility_finds_small_text():
    """The measurement can fail: the old 3-panel training figure (11 in, legend at 7 pt) is under 6 pt."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from advbook import plots

    plots.use_style()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    axes[1].plot([0, 1], [0, 1], label="iCE: online D_nc (train)")
    axes[1].legend(fontsize=7)
    text, size = plots.legibility(fig)[0]
    assert text == "iCE: online D_nc (train)" and size < 6
    plt.close(fig)


def figure_size_problems(source: str) -> list[str]:
    """Figure widths over MAX_WIDTH_IN and fonts under SMALL_PT asked for in one code cell's source."""
    from advbook import plots

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for kw in node.keywords:
            text = ast.unparse(kw.value)
            if kw.arg == "figsize" and isinstance(kw.value, ast.Tuple):
                width = kw.value.elts[0]
                if isinstance(width, ast.Constant):
                    if width.value > plots.MAX_WIDTH_IN + 1e-9:
                        found.append(f"figsize={text}: wider than plots.MAX_WIDTH_IN ({plots.MAX_WIDTH_IN} in)")
                elif "plots." not in ast.unparse(width):
                    found.append(f"figsize={text}: a computed width must be bounded by plots.MAX_WIDTH_IN "
                                 "(or use plots.panels / plots.image_grid)")
            elif kw.arg == "fontsize":
                v = kw.value
                if isinstance(v, ast.Constant) and isinstance(v.value, (int, float)):
                    if v.value < plots.SMALL_PT:
                        found.append(f"fontsize={text}: under plots.SMALL_PT ({plots.SMALL_PT} pt)")
                elif isinstance(v, ast.Constant) and v.value in SMALL_FONT_NAMES:
                    found.append(f"fontsize={text}: under plots.SMALL_PT ({plots.SMALL_PT} pt)")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_figures_fit_the_column_with_house_fonts(path):
    nb = json.loads(path.read_text())
    found = [f"cell {i}: {p}" for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             for p in figure_size_problems("".join(c["source"]))]
    assert found == []


def test_figure_size_rule_catches_what_it_should():
    assert len(figure_size_problems("fig, ax = plt.subplots(1, 3, figsize=(11, 3.2))\nax.legend(fontsize=7)")) == 2
    assert len(figure_size_problems("plt.subplots(1, n, figsize=(2.4 * n, 2.8))")) == 1
    assert figure_size_problems("ax.legend(fontsize='x-small')")
    assert figure_size_problems("plt.subplots(figsize=(plots.MAX_WIDTH_IN, 3))\nax.text(0, 0, 's', fontsize=9)") == []
