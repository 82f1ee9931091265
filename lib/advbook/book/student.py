"""The student edition: every chapter as a notebook to work through, without outputs, verdicts or solutions.

``python -m advbook.book.student [CHAPTER ...] --out student/`` (or ``advbook student``) writes
``student/<chapter id>.ipynb`` for every chapter (or the ones named, by id or number):

* no outputs, and no verdict: the prose of the claims sections is left out, and every code cell
  that grades a claim or handles a verdict runs under ``%%capture`` (it still computes what
  later cells use, but shows nothing); the cell that saves the chapter's results is left out, so
  a student's run never overwrites the book's ``book/results/<id>.json``;
* no solutions: every ``:::{solution}`` block of the Exercises section is removed; each
  ``:::{exercise}`` becomes a Markdown cell "Exercise N.k" with the task, followed by a code cell
  to fill (nbgrader *autograded answer* metadata: ``solution``) and, where the exercise has a
  checkable answer, an assertion cell (nbgrader *autograder tests*: ``grade``, ``points``,
  ``locked`` and a stable ``grade_id``). An exercise without a checkable answer gets a code cell
  for the student's work and a Markdown cell for the written answer (nbgrader *manually graded
  answer*). The asserts are plain Python: they run, and fail, without nbgrader.

The chapter notebook is the single source of truth. A checkable exercise has two code cells after
its Markdown cell, both tagged ``remove-cell`` (the book does not show them) and marked in their
metadata ``{"advbook": {"exercise": "<label>", "role": "answer" | "check", "points": P}}``:

* the *answer* cell first sets the names the student must compute to ``None``
  (``# YOUR ANSWER HERE``), then computes them between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION`` and glues the numbers the book's solution quotes;
* the *check* cell asserts the answer against what the chapter itself computed (another route to
  the same quantity, never a typed number).

An exercise whose answer needs a rerun may have a *solution* cell instead (``"role": "solution"``,
also ``remove-cell``): it glues the numbers its prose solution quotes (this build's value, the recorded
``long`` run's) and is left out of the student edition.

The book runs both cells (so every build checks its own solutions); the student edition keeps the
answer cell without its solution region and the check cell as it is; ``--solutions`` keeps the
solution regions too (nbgrader's *source* version, which ``nbgrader generate_assignment`` reads, and
what the test suite runs to show that the filled-in notebook passes).
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path
from typing import Iterable, Sequence

import nbformat

from ..paths import Book

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
NBGRADER_SCHEMA = 3
CHECK_POINTS = 1
"""Points of a check cell whose metadata gives none."""
WRITTEN_POINTS = 2
"""Points of the manually graded written answer of an exercise without a checkable answer."""

VERDICT_SECTIONS = ("claims and verdicts", "what the numbers say", "why the claims", "run information",
                    "reading the verdicts")
"""Markdown sections (by their heading, lower case, prefix) about the graded verdicts or the run's
provenance: left out of the student edition."""

GRADES = re.compile(r"res\.grade\(|grade_family\(|claims_markdown\(|res\.add\(|provenance_markdown\(|"
                    r"\.verdict\b|\.assessment\b|\bverdict\b")
"""A code cell that matches grades a claim or handles a verdict: it runs under ``%%capture``."""
SAVES = re.compile(r"^\s*(path\s*=\s*)?res\.save\(\)\s*$", re.M)
VERDICT_GLUE = re.compile(r"\{glue:text\}`\d\d-v\d*-")
"""Prose that quotes a graded verdict (the chapters glue verdicts as ``NN-v-...`` / ``NN-v1-...``)."""
EXERCISE = re.compile(r"^:::\{exercise\}[^\n]*\n(.*?)^:::[ \t]*$", re.M | re.S)
SOLUTION = re.compile(r"^:::\{solution\}[^\n]*\n.*?^:::[ \t]*$\n?", re.M | re.S)
OPTION = re.compile(r"^:(label|class|nonumber):[^\n]*\n", re.M)
LABEL = re.compile(r"^:label:\s*(\S+)", re.M)
ROLE = re.compile(r"\{(?:ref|numref|eq|glue:text|glue:figure)\}`([^`<]*?)(?:<([^`>]+)>)?`")
GRADE_ID = re.compile(r"^[a-zA-Z0-9_\-]+$")


def _root() -> Path:
    from ..paths import repo_root

    return repo_root()


def advbook_meta(cell) -> dict:
    """The cell's ``{"exercise", "role", "points"}`` marks (empty for every other cell)."""
    return dict(cell.get("metadata", {}).get("advbook", {}) or {})


def strip_solution_code(source: str) -> str:
    """``source`` without the lines from ``### BEGIN SOLUTION`` to ``### END SOLUTION`` (both included).

    A region that is opened and never closed is an error: it would leave the solution in.
    """
    out, inside = [], False
    for line in source.splitlines():
        mark = line.strip()
        if mark == BEGIN:
            if inside:
                raise ValueError("nested '### BEGIN SOLUTION'")
            inside = True
        elif mark == END:
            if not inside:
                raise ValueError("'### END SOLUTION' without a BEGIN")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("'### BEGIN SOLUTION' is never closed")
    return "\n".join(out).rstrip() + "\n"


def strip_solutions(markdown: str) -> str:
    """Markdown without its ``:::{solution}`` blocks."""
    return SOLUTION.sub("", markdown)


def plain_roles(text: str) -> str:
    """MyST roles a plain notebook does not render, as readable text: ``{numref}`fig-x``` -> ``fig-x``."""
    return ROLE.sub(lambda m: f"`{(m.group(2) or m.group(1)).strip()}`", text)


def exercises_in(markdown: str) -> list[tuple[str, str]]:
    """``[(label, task), ...]``: every ``:::{exercise}`` block of a Markdown cell, its options removed."""
    found = []
    for m in EXERCISE.finditer(markdown):
        label = LABEL.search(m.group(1))
        if not label:
            raise ValueError(f"an exercise without a :label: ({m.group(1)[:60]!r})")
        found.append((label.group(1), OPTION.sub("", m.group(1)).strip()))
    return found


def _section_of(markdown: str, current: str | None) -> str | None:
    """The last ``##`` heading of a Markdown cell (lower case), else the section it continues."""
    for line in markdown.splitlines():
        m = re.match(r"^(#{2,3})\s+(.*)$", line)
        if m and (len(m.group(1)) == 2 or m.group(2).strip().lower().startswith(VERDICT_SECTIONS)):
            current = m.group(2).strip().lower()
    return current


def _in_verdict_section(section: str | None) -> bool:
    return bool(section) and section.startswith(VERDICT_SECTIONS)


def nbgrader(kind: str, grade_id: str, points: float | None = None) -> dict:
    """nbgrader cell metadata (schema 3) for ``kind``: ``answer`` (autograded answer: a code cell to fill),
    ``tests`` (autograder tests: an assertion cell), ``written`` (a manually graded answer, Markdown) or
    ``readonly`` (a locked cell)."""
    base = {"grade": False, "solution": False, "locked": False, "task": False, "grade_id": grade_id,
            "schema_version": NBGRADER_SCHEMA}
    if kind == "answer":
        base.update(solution=True)
    elif kind == "tests":
        base.update(grade=True, locked=True, points=float(points if points is not None else CHECK_POINTS))
    elif kind == "written":
        base.update(grade=True, solution=True, points=float(points if points is not None else WRITTEN_POINTS))
    elif kind == "readonly":
        base.update(locked=True)
    else:
        raise ValueError(f"unknown nbgrader cell kind {kind!r}")
    return base


def validate_nbgrader(nb) -> list[str]:
    """Problems nbgrader's metadata validator (schema 3) would raise, as messages (empty: valid).

    The rules: a grade, solution or locked cell has a non-empty ``grade_id`` of letters, digits, ``_``
    and ``-``, unique in the notebook; a grade cell has ``points`` (a number >= 0); a Markdown cell is
    graded exactly when it is a solution (unless it is a task); a task cell is Markdown.
    """
    problems, ids = [], set()
    for i, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta is None:
            continue
        where = f"cell {i}"
        missing = [k for k in ("grade", "solution", "locked", "schema_version") if k not in meta]
        if missing:
            problems.append(f"{where}: nbgrader metadata lacks {missing}")
            continue
        if meta["schema_version"] != NBGRADER_SCHEMA:
            problems.append(f"{where}: schema_version {meta['schema_version']} (expected {NBGRADER_SCHEMA})")
        grade, solution, locked, task = meta["grade"], meta["solution"], meta["locked"], meta.get("task", False)
        if grade or solution or locked:
            gid = meta.get("grade_id", "")
            if not gid or not GRADE_ID.match(gid):
                problems.append(f"{where}: grade_id {gid!r} is empty or not [a-zA-Z0-9_-]+")
            elif gid in ids:
                problems.append(f"{where}: duplicate grade_id {gid!r}")
            ids.add(gid)
        if grade and not isinstance(meta.get("points"), (int, float)) or grade and meta.get("points", 0) < 0:
            problems.append(f"{where}: a grade cell needs points >= 0")
        if task and cell.cell_type != "markdown":
            problems.append(f"{where}: a task cell must be Markdown")
        if not task and cell.cell_type == "markdown" and grade != solution:
            problems.append(f"{where}: a Markdown cell must be both grade and solution, or neither")
        if solution and locked:
            problems.append(f"{where}: a solution cell cannot be locked")
    return problems


def _grade_id(label: str, suffix: str) -> str:
    gid = re.sub(r"[^a-zA-Z0-9_\-]", "-", f"{label}-{suffix}")
    return gid


def _new_markdown(source: str, **metadata):
    return nbformat.v4.new_markdown_cell(source, metadata=metadata)


def _new_code(source: str, **metadata):
    return nbformat.v4.new_code_cell(source, metadata=metadata)


def student_notebook(nb, chapter_id: str, solutions: bool = False):
    """The student edition of the chapter notebook ``nb`` (an nbformat notebook; not modified).

    ``solutions=True`` keeps the solution regions of the answer cells (nbgrader's source version).
    """
    nb = copy.deepcopy(nb)
    number = int(chapter_id.split("_", 1)[0]) if chapter_id[:2].isdigit() else 0
    answers, checks, glued = {}, {}, set()
    for cell in nb.cells:
        meta = advbook_meta(cell)
        if meta.get("role") == "answer":
            answers[meta["exercise"]] = cell
        elif meta.get("role") == "check":
            checks.setdefault(meta["exercise"], []).append(cell)
        elif meta.get("role") == "solution":
            glued.add(meta["exercise"])
    unknown = set(checks) - set(answers)
    if unknown:
        raise ValueError(f"{chapter_id}: check cell(s) without an answer cell: {sorted(unknown)}")

    title = next((c.source.splitlines()[0].lstrip("# ").strip() for c in nb.cells if c.cell_type == "markdown"), chapter_id)
    cells = [_new_markdown(
        f"*Student edition of chapter {number:02d}, {title}.* Run every cell from the top (the `tiny` profile, "
        "`profile = \"tiny\"` in the parameters cell, runs in seconds and checks your code; `quick` gives the "
        "numbers the book discusses). The exercises are at the end: fill each cell marked `# YOUR ANSWER HERE` "
        "and run the assertion cell after it; a failing `assert` says which answer is not right yet. The "
        "claims' verdicts and the solutions are left out; the book has them.",
        nbgrader=nbgrader("readonly", f"ch{number:02d}-intro"))]
    section, k = None, 0
    seen = set()
    for cell in nb.cells:
        meta = advbook_meta(cell)
        if meta.get("role") in ("answer", "check"):
            continue  # placed after their exercise below
        if meta.get("role") == "solution":
            continue  # only glues the numbers of the book's solution
        if cell.cell_type == "markdown":
            section = _section_of(cell.source, section)
            found = exercises_in(cell.source)
            if not found:
                if _in_verdict_section(section) or VERDICT_GLUE.search(cell.source):
                    continue
                text = plain_roles(strip_solutions(cell.source)).strip()
                if text:
                    cells.append(_new_markdown(text))
                continue
            before = EXERCISE.split(strip_solutions(cell.source))[0].strip()
            heads = [m.start() for m in re.finditer(r"^## ", before, re.M)]
            before = before[heads[-1]:] if heads else before  # from the cell's last '##' heading (Exercises)
            if before and not VERDICT_GLUE.search(before):
                cells.append(_new_markdown(plain_roles(before)))
            for label, task in found:
                if label in seen:
                    raise ValueError(f"{chapter_id}: exercise label {label!r} appears twice")
                seen.add(label)
                k += 1
                cells.append(_new_markdown(f"### Exercise {number}.{k}\n\n{plain_roles(task)}",
                                           nbgrader=nbgrader("readonly", _grade_id(label, "task"))))
                if label in answers:
                    src = answers[label].source
                    src = src if solutions else strip_solution_code(src)
                    cells.append(_new_code(src, nbgrader=nbgrader("answer", _grade_id(label, "answer")),
                                           advbook={"exercise": label, "role": "answer"}))
                    for j, check in enumerate(checks.get(label, [])):
                        pts = advbook_meta(check).get("points", CHECK_POINTS)
                        cells.append(_new_code(check.source, nbgrader=nbgrader(
                            "tests", _grade_id(label, f"check{j + 1}" if j else "check"), pts),
                            advbook={"exercise": label, "role": "check"}))
                else:
                    cells.append(_new_code("# YOUR ANSWER HERE: the commands you ran and the numbers you read\n",
                                           nbgrader=nbgrader("answer", _grade_id(label, "work"))))
                    cells.append(_new_markdown("YOUR ANSWER HERE", nbgrader=nbgrader("written", _grade_id(label, "written"))))
            continue
        # a code cell
        if SAVES.search(cell.source):  # the results file is the book's; the provenance table goes with it
            cell.source = "\n".join(line for line in SAVES.sub("", cell.source).splitlines()
                                     if "provenance_markdown(" not in line).strip()
            if not cell.source:
                continue
        tags = cell.metadata.get("tags", [])
        if "parameters" in tags:
            cells.append(_new_code(cell.source, tags=list(tags)))
            continue
        source = cell.source
        if _in_verdict_section(section) or GRADES.search(source):
            source = "%%capture\n# grades the chapter's claims: computed, not shown in the student edition\n" + source
        cells.append(_new_code(source, **({"tags": list(tags)} if tags else {})))
    missing = (set(answers) | glued) - seen
    if missing:
        raise ValueError(f"{chapter_id}: answer cell(s) for exercises the chapter does not state: {sorted(missing)}")
    out = nbformat.v4.new_notebook(cells=cells)
    out.metadata = {k: v for k, v in nb.metadata.items() if k in ("kernelspec", "language_info")}
    problems = validate_nbgrader(out)
    if problems:
        raise ValueError(f"{chapter_id}: invalid nbgrader metadata: {problems}")
    return out


def chapters(root: Path, names: Sequence[str] = ()) -> list[str]:
    """Chapter ids under ``root/notebooks`` (every one, or those named by id or by number)."""
    ids = Book(root).available()
    if not names:
        return ids
    picked = []
    for name in names:
        hit = [c for c in ids if c == name or c.split("_", 1)[0] == str(name).zfill(2)]
        if not hit:
            raise SystemExit(f"advbook student: no chapter {name!r}; available: {', '.join(ids)}")
        picked += hit
    return list(dict.fromkeys(picked))


def write(names: Sequence[str] = (), out: str | Path = "student", root: str | Path | None = None,
          solutions: bool = False) -> list[Path]:
    """Write the student edition of the chapters ``names`` (default: all) to ``out``; return the paths."""
    root = Path(root) if root is not None else _root()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for chapter_id in chapters(root, names):
        nb = nbformat.read(Book(root).source(chapter_id), as_version=4)
        student = student_notebook(nb, chapter_id, solutions=solutions)
        path = out / f"{chapter_id}.ipynb"
        nbformat.write(student, path)
        written.append(path)
    return written


def summary(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    metas = [c.metadata.get("nbgrader", {}) for c in nb.cells]
    n_ex = sum(1 for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("### Exercise "))
    n_tests = sum(1 for m in metas if m.get("grade") and not m.get("solution"))
    points = sum(m.get("points", 0) for m in metas if m.get("grade"))
    return f"{path}: {n_ex} exercises, {n_tests} assertion cell(s), {points:g} points"


def add_parser(sub) -> None:
    """The ``student`` sub-command of ``advbook`` (:mod:`advbook.book.cli`)."""
    p = sub.add_parser("student", help="write the student edition: chapters without outputs, verdicts or "
                                       "solutions, exercises as nbgrader cells")
    _arguments(p)


def _arguments(p) -> None:
    p.add_argument("chapters", nargs="*", help="chapter ids or numbers (default: every chapter)")
    p.add_argument("--out", default="student", help="output folder (default: student/)")
    p.add_argument("--solutions", action="store_true",
                   help="keep the solution regions (the instructor's copy; nbgrader's source version)")
    p.add_argument("--root", default=None, help="the book's root directory (default: the checkout around the cwd)")


def main(argv: Iterable[str] | None = None, args=None) -> int:
    if args is None:
        parser = argparse.ArgumentParser(prog="python -m advbook.book.student", description=__doc__.split("\n\n")[0])
        _arguments(parser)
        args = parser.parse_args(None if argv is None else list(argv))
    for path in write(args.chapters, args.out, args.root, solutions=args.solutions):
        print(summary(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
