"""``advbook new NAME``: scaffold a chapter that already follows the chapter contract.

One command writes the three files a chapter owns (see CONTRIBUTING.md) and registers it:

- ``notebooks/NN_NAME.ipynb`` (``NN``: the next free number): a title, a ``parameters``
  cell, the one-call validation :func:`advbook.book.chapter.setup`, a results section, a claims
  table whose verdicts come from :func:`advbook.protocol.grade` (claims declared in the module's
  ``CLAIMS``), and the provenance table;
- ``lib/advbook/methods/NAME.py``: ``CHAPTER``, ``PARAMETERS`` (``PROFILES``, ``SCHEMA``), ``FULL_PATH_TEST``, ``CLAIMS``
  and small real functions (the example measures logit margins under PGD);
- ``tests/test_NAME.py``: unit tests of those functions;
- an entry ``book/chapters/NN_NAME`` in ``_toc.yml``, after the last chapter.

The new chapter runs as it is (``advbook run NN --profile tiny``) and the test suite picks it
up (``tests/test_notebooks.py`` runs every ``notebooks/NN_*.ipynb``). The templates live in
``advbook/book/templates/``. A bad name, a taken number or an existing file stops the command
before anything is written.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..paths import CHAPTER_GLOB

TEMPLATES = Path(__file__).resolve().parent / "templates"
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
MAX_NAME = 40
CHAPTER_RE = re.compile(r"^(\d\d)_(\w+)\.ipynb$")
TOC_ENTRY_RE = re.compile(r"^(?P<indent>\s*)- file: book/chapters/(?P<chapter>\d\d_\w+)\s*$")


class ScaffoldError(ValueError):
    """The chapter cannot be created as asked (bad name, number taken, file exists...)."""


@dataclass
class NewChapter:
    """What :func:`new_chapter` wrote."""

    chapter: str
    notebook: Path
    module: Path
    test: Path
    toc: Path

    def paths(self) -> list[Path]:
        return [self.notebook, self.module, self.test, self.toc]


def _template_names() -> set[str]:
    """Names the notebook and test templates bind (variables, arguments, imports): the chapter's
    module, imported under its own name beside them, must not shadow any of them."""
    nb = nbformat.read(TEMPLATES / "chapter.ipynb", as_version=4)
    sources = [c.source for c in nb.cells if c.cell_type == "code"] + [(TEMPLATES / "test.py.tmpl").read_text()]
    names: set[str] = set()
    for source in sources:
        for node in ast.walk(ast.parse(re.sub(r"\{\{\w+\}\}", "placeholder", source))):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
    names.discard("placeholder")
    return names


def check_name(name: str) -> str:
    """Validate a chapter name (lower-case snake_case, a Python identifier); returns it."""
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > MAX_NAME:
        raise ScaffoldError(
            f"chapter name {name!r} is not allowed: use lower-case letters, digits and single underscores, "
            f"starting with a letter, at most {MAX_NAME} characters (e.g. 'margins' or 'feature_attacks'); "
            "it names the notebook, the methods module and the test file")
    import advbook
    from advbook import book

    modules = {i.name for path in (advbook.__path__, book.__path__) for i in pkgutil.iter_modules(path)}
    taken_by = [
        ("a Python keyword or builtin", set(keyword.kwlist) | set(dir(builtins))),
        ("an advbook module (the notebook imports both)", modules | {"advbook"}),
        ("a name the chapter template binds", _template_names() | {"test", "tests"}),
    ]
    for what, names in taken_by:
        if name in names:
            raise ScaffoldError(f"chapter name {name!r} is taken: it is {what}; choose another "
                                f"(e.g. add the paper's topic: '{name}_attacks')")
    return name


def check_title(title: str) -> str:
    title = " ".join(str(title).split())
    if not title or len(title) > 120:
        raise ScaffoldError(f"title {title!r} must be one line of 1 to 120 characters")
    return title


def existing_chapters(root: Path) -> dict[int, str]:
    """Numbers and ids of the chapters in ``notebooks/``."""
    found = {}
    for path in sorted((root / "notebooks").glob(CHAPTER_GLOB)):
        m = CHAPTER_RE.match(path.name)
        if m:
            found[int(m.group(1))] = path.stem
    return found


def next_number(root: Path) -> int:
    chapters = existing_chapters(root)
    number = max(chapters, default=-1) + 1
    if number > 99:
        raise ScaffoldError("no chapter number left: notebooks/ already has a chapter 99")
    return number


def render(text: str, values: dict[str, str]) -> str:
    """Replace every ``{{key}}`` of ``text``; an unknown placeholder is an error (a template bug)."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            raise ScaffoldError(f"template placeholder {{{{{m.group(1)}}}}} has no value; known: {sorted(values)}")
        return values[m.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", sub, text)


def notebook_text(values: dict[str, str]) -> str:
    nb = nbformat.read(TEMPLATES / "chapter.ipynb", as_version=4)
    for cell in nb.cells:
        cell.source = render(cell.source, values)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nbformat.writes(nb) + "\n"


def register_in_toc(toc_text: str, chapter: str) -> str:
    """``_toc.yml`` with ``book/chapters/<chapter>`` added after the last chapter entry (comments kept)."""
    import yaml

    lines = toc_text.splitlines(keepends=True)
    last = None
    for i, line in enumerate(lines):
        m = TOC_ENTRY_RE.match(line.rstrip("\n"))
        if m:
            if m.group("chapter") == chapter:
                raise ScaffoldError(f"_toc.yml already lists book/chapters/{chapter}")
            last = (i, m.group("indent"))
    if last is None:
        raise ScaffoldError("_toc.yml lists no chapter (no line '- file: book/chapters/NN_name'); "
                            f"add '- file: book/chapters/{chapter}' where it belongs by hand")
    i, indent = last
    if not lines[i].endswith("\n"):
        lines[i] += "\n"
    lines.insert(i + 1, f"{indent}- file: book/chapters/{chapter}\n")
    text = "".join(lines)
    if f"book/chapters/{chapter}" not in str(yaml.safe_load(text)):
        raise ScaffoldError("could not register the chapter in _toc.yml (the edited file does not list it)")
    return text


def new_chapter(name: str, root: str | Path = ".", title: str | None = None, number: int | None = None) -> NewChapter:
    """Create chapter ``NN_<name>`` in the book at ``root`` (see the module docstring)."""
    root = Path(root).resolve()
    for needed in ("notebooks", "lib/advbook/methods", "_toc.yml"):
        if not (root / needed).exists():
            raise ScaffoldError(f"{root} is not the book's root: {needed} is missing (use --root)")
    name = check_name(name)
    title = check_title(title if title is not None else name.replace("_", " ").capitalize())
    chapters = existing_chapters(root)
    taken = [c for c in chapters.values() if c[3:] == name]
    if taken:
        raise ScaffoldError(f"chapter {taken[0]!r} already exists (notebooks/{taken[0]}.ipynb); choose another name")
    if number is None:
        number = next_number(root)
    elif not 0 <= number <= 99:
        raise ScaffoldError(f"chapter number {number} is out of range; allowed: 0 to 99")
    elif number in chapters:
        free = next_number(root) if max(chapters) < 99 else None
        raise ScaffoldError(f"chapter number {number:02d} is taken by {chapters[number]!r}"
                            + (f"; the next free number is {free:02d}" if free is not None else ""))
    chapter = f"{number:02d}_{name}"
    out = NewChapter(chapter, root / "notebooks" / f"{chapter}.ipynb", root / "lib" / "advbook" / "methods" / f"{name}.py",
                     root / "tests" / f"test_{name}.py", root / "_toc.yml")
    for path in (out.notebook, out.module, out.test):
        if path.exists():
            raise ScaffoldError(f"{path.relative_to(root)} already exists; choose another name or remove it")
    values = {"name": name, "chapter": chapter, "title": title, "number": f"{number:02d}"}
    contents = {
        out.notebook: notebook_text(values),
        out.module: render((TEMPLATES / "method.py.tmpl").read_text(), values),
        out.test: render((TEMPLATES / "test.py.tmpl").read_text(), values),
        out.toc: register_in_toc(out.toc.read_text(), chapter),
    }
    written = []
    out.test.parent.mkdir(exist_ok=True)
    try:
        for path, text in contents.items():
            path.write_text(text)
            written.append(path)
    except OSError as exc:
        for path in written:
            if path != out.toc:
                path.unlink(missing_ok=True)
        raise ScaffoldError(f"could not write {path}: {exc}") from exc
    from . import colab

    try:
        repo = colab.repository(root) if (root / "_config.yml").is_file() else None
    except colab.NoRepository:  # `advbook colab-sync` explains what to fix; the chapter is usable as it is
        repo = None
    if repo is not None:  # the same guarded Colab install cell as every other chapter
        colab.sync_notebook(out.notebook, repo)
    return out


def add_parser(sub) -> None:
    """The ``new`` sub-command of ``advbook`` (:mod:`advbook.book.cli`)."""
    new = sub.add_parser("new", help="scaffold a chapter: notebook, methods module, test, _toc.yml entry",
                         description=__doc__.split("\n\n")[0])
    new.add_argument("name", help="lower-case snake_case name, e.g. margins (the chapter becomes NN_margins)")
    new.add_argument("--title", help="the chapter's title (default: the name, capitalised)")
    new.add_argument("--number", type=int, help="chapter number (default: the next free one)")
    new.add_argument("--root", default=None, help="the book's root directory (default: the checkout around the cwd)")


def main(args, root: str | Path | None = None) -> int:
    """Run ``advbook new`` from parsed arguments (``root``: the book, default the checkout around the cwd)."""
    import sys

    if root is None:
        from ..paths import find_root

        root = args.root or find_root() or "."
    try:
        made = new_chapter(args.name, root, title=args.title, number=args.number)
    except ScaffoldError as exc:
        print(f"advbook: error: {exc}", file=sys.stderr)
        return 2
    base = Path(root).resolve()
    print(f"created chapter {made.chapter}:")
    for path in made.paths():
        print(f"  {path.relative_to(base)}" + ("  (entry added)" if path == made.toc else ""))
    print(f"next: .venv/bin/advbook run {made.chapter[:2]} --profile tiny   # runs it, then builds the site\n"
          f"      .venv/bin/pytest -q tests/test_{args.name}.py\n"
          "      add the paper to book/references.bib and cite it with {cite}`key`; see CONTRIBUTING.md")
    return 0


__all__ = ["ScaffoldError", "NewChapter", "new_chapter", "check_name", "next_number", "register_in_toc",
           "add_parser", "main"]
