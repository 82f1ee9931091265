"""The student edition (advbook.book.student): no outputs, verdicts or solutions; exercises as nbgrader cells.

The unit tests build small notebooks in the chapters' format; the ``slow`` test runs every chapter's
student notebook in the tiny profile, once with the solutions filled back in (it must pass) and once
as a student gets it (an assertion must fail).
"""

from __future__ import annotations

import re

import nbformat
import pytest

from advbook.book import cli, student

from conftest import ROOT

CHAPTERS = student.chapters(ROOT)


def _md(text, **metadata):
    return nbformat.v4.new_markdown_cell(text, metadata=metadata)


def _code(text, **metadata):
    return nbformat.v4.new_code_cell(text, metadata=metadata)


def small_chapter():
    """A chapter notebook in the book's format: prose, parameters, a graded claim, exercises, results."""
    output = nbformat.v4.new_output("stream", name="stdout", text="trained\n")
    fit = _code("table = {'AT': [0.5, 0.7]}\nprint('trained')")
    fit.outputs = [output]
    fit.execution_count = 3
    cells = [
        _md("# A small chapter\n\nThe paper in one paragraph."),
        _code('profile = "auto"\nseed = 0', tags=["parameters"]),
        fit,
        _md("The AT model keeps {glue:text}`07-robust` (see {numref}`fig-07-x`)."),
        _md("## Claims and verdicts\n\nThe claim came out *{glue:text}`07-v-robust`*."),
        _code("g = res.grade(CLAIMS['robust'], table['AT'])\nch.glue('07-v-robust', g.verdict)"),
        _md("Before the exercises: in this run the claim was *{glue:text}`07-v-robust`*.\n\n## Exercises\n\n"
            "Read the times.\n\n"
            ":::{exercise}\n:label: ex-07-mean\nCompute `at_mean`, the mean of `table['AT']`.\n:::\n\n"
            ":::{solution} ex-07-mean\n:class: dropdown\nSECRET-MEAN: `sum(table['AT']) / 2`.\n:::\n\n"
            ":::{exercise}\n:label: ex-07-why\nWhy two seeds? Run `advbook run 07 --profile quick -p seeds 5`.\n:::\n\n"
            ":::{solution} ex-07-why\n:class: dropdown\nSECRET-WHY: an interval needs two.\n```python\nx = 1\n```\n:::"),
        _code("at_mean = None  # YOUR ANSWER HERE\n### BEGIN SOLUTION\nat_mean = sum(table['AT']) / 2\n"
              "### END SOLUTION", tags=["remove-cell"], advbook={"exercise": "ex-07-mean", "role": "answer"}),
        _code("assert at_mean is not None\nassert abs(at_mean - 0.6) < 1e-9", tags=["remove-cell"],
              advbook={"exercise": "ex-07-mean", "role": "check", "points": 3}),
        _code("ch.glue('07-ex-why-long', 'SECRET-GLUE')", tags=["remove-cell"],
              advbook={"exercise": "ex-07-why", "role": "solution"}),
        _md("## Run information"),
        _code("path = res.save()\ndisplay(Markdown(res.provenance_markdown()))"),
    ]
    return nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                          "language": "python"}})


def test_strip_solution_code_keeps_the_stub_and_refuses_an_open_region():
    src = "x = None  # YOUR ANSWER HERE\n### BEGIN SOLUTION\nx = 42\n### END SOLUTION\nprint(x)"
    assert student.strip_solution_code(src) == "x = None  # YOUR ANSWER HERE\nprint(x)\n"
    with pytest.raises(ValueError, match="never closed"):
        student.strip_solution_code("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(ValueError, match="without a BEGIN"):
        student.strip_solution_code("x = 1\n### END SOLUTION")


def test_student_notebook_has_no_outputs_verdicts_or_solutions():
    nb = student.student_notebook(small_chapter(), "07_small")
    text = "\n".join(c.source for c in nb.cells)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert "SECRET" not in text and ":::{solution" not in text and "BEGIN SOLUTION" not in text, \
        "no prose solution, no solution region, no cell that glues a solution's numbers"
    assert "sum(table['AT'])" not in text, "the answer cell's solution region is removed"
    assert "07-v-robust" not in "\n".join(c.source for c in nb.cells if c.cell_type == "markdown"), \
        "no prose that quotes a verdict"
    assert "res.save()" not in text and "provenance_markdown" not in text, "a student run writes no results file"
    grading = [c for c in nb.cells if "res.grade(" in c.source]
    assert len(grading) == 1 and grading[0].source.startswith("%%capture\n"), "graded, but nothing shown"
    assert "Read the times." in text, "the Exercises section's own prose stays"
    assert "(see `fig-07-x`)" in text, "MyST roles become plain text"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "papermill can still inject parameters"


def test_each_exercise_becomes_a_task_a_cell_to_fill_and_an_assertion():
    nb = student.student_notebook(small_chapter(), "07_small")
    assert student.validate_nbgrader(nb) == []
    heads = [i for i, c in enumerate(nb.cells) if c.source.startswith("### Exercise ")]
    assert [nb.cells[i].source.splitlines()[0] for i in heads] == ["### Exercise 7.1", "### Exercise 7.2"]
    task, answer, check = nb.cells[heads[0]: heads[0] + 3]
    assert ":label:" not in task.source and "Compute `at_mean`" in task.source
    assert answer.cell_type == "code" and answer.metadata.nbgrader["solution"] and not answer.metadata.nbgrader["grade"]
    assert answer.source.strip() == "at_mean = None  # YOUR ANSWER HERE"
    meta = check.metadata.nbgrader
    assert meta["grade"] and meta["locked"] and not meta["solution"] and meta["points"] == 3
    assert meta["grade_id"] == "ex-07-mean-check" and meta["schema_version"] == 3
    assert check.source.startswith("assert at_mean is not None")
    # an exercise without a checkable answer: a code cell for the work and a manually graded written answer
    work, written = nb.cells[heads[1] + 1: heads[1] + 3]
    assert work.cell_type == "code" and work.metadata.nbgrader["solution"]
    assert written.cell_type == "markdown" and written.metadata.nbgrader["grade"] and written.metadata.nbgrader["solution"]


def test_the_solutions_flag_keeps_the_solution_regions():
    nb = student.student_notebook(small_chapter(), "07_small", solutions=True)
    answer = next(c for c in nb.cells if c.metadata.get("advbook", {}).get("role") == "answer")
    assert "### BEGIN SOLUTION\nat_mean = sum(table['AT']) / 2\n### END SOLUTION" in answer.source
    assert "SECRET" not in "\n".join(c.source for c in nb.cells), "the prose solutions stay in the book"


def test_a_check_without_its_answer_or_exercise_is_refused():
    nb = small_chapter()
    nb.cells = [c for c in nb.cells if c.metadata.get("advbook", {}).get("role") != "answer"]
    with pytest.raises(ValueError, match="without an answer cell"):
        student.student_notebook(nb, "07_small")
    nb = small_chapter()
    nb.cells[6].source = nb.cells[6].source.replace("ex-07-mean", "ex-07-other")
    with pytest.raises(ValueError, match="does not state"):
        student.student_notebook(nb, "07_small")
    nb = small_chapter()
    nb.cells[9].metadata.advbook["exercise"] = "ex-07-gone"
    with pytest.raises(ValueError, match="does not state"):
        student.student_notebook(nb, "07_small")


def test_validate_nbgrader_reports_what_nbgrader_would_refuse():
    nb = nbformat.v4.new_notebook(cells=[
        _code("x = 1", nbgrader=student.nbgrader("answer", "a")),
        _code("assert x", nbgrader={**student.nbgrader("tests", "a"), "points": None}),
        _md("text", nbgrader={**student.nbgrader("written", "b"), "solution": False}),
        _code("y", nbgrader=student.nbgrader("answer", "bad id!")),
    ])
    problems = "\n".join(student.validate_nbgrader(nb))
    assert "duplicate grade_id 'a'" in problems
    assert "needs points" in problems
    assert "both grade and solution" in problems
    assert "not [a-zA-Z0-9_-]+" in problems


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_chapter_has_a_student_edition_with_a_checked_exercise(chapter):
    source = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
    nb = student.student_notebook(source, chapter)
    assert student.validate_nbgrader(nb) == []
    checks = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")
              and not c.metadata["nbgrader"]["solution"]]
    assert checks, f"{chapter}: at least one exercise with an assertion"
    labels = re.findall(r"^:label: (ex-\S+)", "\n".join(c.source for c in source.cells if c.cell_type == "markdown"),
                        re.M)
    tasks = [c for c in nb.cells if c.source.startswith("### Exercise ")]
    assert len(tasks) == len(labels) >= 3
    # every prose solution is gone: no sentence of a solution block appears in the student edition
    text = "\n".join(c.source for c in nb.cells)
    for block in re.findall(r"^:::\{solution\}[^\n]*\n(.*?)^:::", "\n".join(c.source for c in source.cells), re.M | re.S):
        body = [line for line in block.splitlines() if len(line) > 40 and not line.startswith(":")]
        assert not any(line in text for line in body), f"{chapter}: a solution leaks: {body[:1]}"
    # every exercise states its time, difficulty, whether it edits the library, and one command form
    for c in source.cells:
        for task in re.findall(r"^:::\{exercise\}\n(.*?)^:::", c.source, re.M | re.S):
            assert "**Time**" in task and "**Difficulty**" in task and "**Edits library code**" in task, task[:80]
            assert "papermill" not in task
            for command in re.findall(r"`(advbook run [^`]*)`", task):
                assert re.match(r"advbook run \d\d --profile \w+( (-p \w+ \S+|-y \"[^\"]+\"|--cell-timeout 0))*$",
                                command), command


def test_the_cli_writes_the_student_edition(tmp_path, capsys):
    assert cli.main(["student", "03", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "03_logit_distributions.ipynb").exists()
    assert "assertion cell" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_student_notebook_runs_with_solutions_and_fails_without(chapter, tmp_path, isolated_dirs):
    """Tiny profile: the filled-in notebook passes every assertion; the student's copy fails one."""
    import papermill

    filled = student.write([chapter], tmp_path / "filled", ROOT, solutions=True)[0]
    blank = student.write([chapter], tmp_path / "blank", ROOT)[0]
    kw = dict(parameters={"profile": "tiny"}, cwd=str(ROOT / "notebooks"), kernel_name="python3", progress_bar=False)
    papermill.execute_notebook(str(filled), str(tmp_path / "filled.out.ipynb"), **kw)
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(blank), str(tmp_path / "blank.out.ipynb"), **kw)
    assert err.value.ename == "AssertionError", err.value.evalue
    assert "in the cell above" in err.value.evalue
