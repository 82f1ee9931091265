"""Open a chapter in Google Colab: the badge on each page and the install cell in each notebook.

Both need the book's GitHub repository, configured once in ``_config.yml``::

    repository:
      url: https://github.com/OWNER/REPO
      branch: main          # optional, default main

- :func:`badge_markdown` is the "Open in Colab" link the runner puts at the top of every
  executed chapter; it opens the *source* notebook (``notebooks/<id>.ipynb`` on that
  branch) through ``colab.research.google.com/github/...``.
- :func:`sync` (``advbook colab-sync``) writes one guarded install cell into every source
  notebook, before its first code cell. The cell does nothing unless it runs on Colab
  (``"google.colab" in sys.modules``); there it pip-installs the library from the
  repository's ``lib/`` folder. It is tagged ``colab-install`` (so it is found and
  replaced on the next sync, and left out of the chapter cache key) and ``remove-cell``
  (the book does not show it).

With no repository configured there is no badge, and ``colab-sync`` says what to set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..paths import Book

CELL_ID = "colab-install"
TAGS = ["colab-install", "remove-cell"]
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
_GITHUB = re.compile(r"^(?:https?://)?(?:www\.)?github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?$")


class NoRepository(ValueError):
    """``_config.yml`` names no GitHub repository (``repository: url:``)."""


@dataclass(frozen=True)
class Repository:
    owner: str
    name: str
    branch: str = "main"

    @property
    def url(self) -> str:
        return f"https://github.com/{self.owner}/{self.name}"

    def colab_url(self, path: str) -> str:
        """The Colab address that opens ``path`` (relative to the repository root) on the branch."""
        return f"https://colab.research.google.com/github/{self.owner}/{self.name}/blob/{self.branch}/{path}"

    def pip_spec(self) -> str:
        """What pip installs on Colab: the library from this repository's ``lib/`` folder."""
        return f"advbook @ git+{self.url}.git@{self.branch}#subdirectory=lib"


def repository(root: str | Path) -> Repository | None:
    """The GitHub repository configured in ``<root>/_config.yml``, or ``None`` when none is.

    Raises :class:`NoRepository` when a URL is set but is not a GitHub repository address
    (Colab opens notebooks from GitHub only).
    """
    import yaml

    config = yaml.safe_load((Path(root) / "_config.yml").read_text()) or {}
    repo = config.get("repository") or {}
    url = str(repo.get("url") or "").strip()
    if not url:
        return None
    match = _GITHUB.match(url)
    if not match:
        raise NoRepository(f"repository url {url!r} in _config.yml is not a GitHub repository address "
                           "(https://github.com/OWNER/REPO); Colab opens notebooks from GitHub only")
    return Repository(match.group(1), match.group(2), str(repo.get("branch") or "main"))


def badge_markdown(repo: Repository, chapter: str) -> str:
    """The "Open in Colab" badge linking to the chapter's source notebook."""
    return f"[![Open in Colab]({BADGE_IMAGE})]({repo.colab_url(f'notebooks/{chapter}.ipynb')})"


def install_source(repo: Repository) -> str:
    """The install cell's code: a no-op outside Colab, a pip install of the library on Colab."""
    return (
        "# On Google Colab only: install the book's library (this cell does nothing elsewhere).\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        "    import subprocess\n"
        "\n"
        f'    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "{repo.pip_spec()}"], check=True)'
    )


def sync_notebook(path: Path, repo: Repository) -> bool:
    """Insert or update the install cell of one notebook; returns whether the file changed."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    source = install_source(repo)
    existing = [c for c in nb.cells if "colab-install" in c.metadata.get("tags", [])]
    if existing:
        cell = existing[0]
        if cell.source == source and all(t in cell.metadata.get("tags", []) for t in TAGS) and len(existing) == 1:
            return False
        for extra in existing[1:]:
            nb.cells.remove(extra)
        cell.source = source
        cell.metadata["tags"] = sorted(set(cell.metadata.get("tags", [])) | set(TAGS))
    else:
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": list(TAGS)})
        if CELL_ID not in {c.get("id") for c in nb.cells}:
            cell.id = CELL_ID
        first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
        nb.cells.insert(first_code, cell)
    nbformat.write(nb, path)
    return True


def sync(root: str | Path, notebooks: list[Path] | None = None) -> list[Path]:
    """Write the install cell into every source notebook (``notebooks/NN_*.ipynb``); returns those changed."""
    repo = repository(root)
    if repo is None:
        raise NoRepository("no repository configured: add to _config.yml\n  repository:\n    url: "
                           "https://github.com/OWNER/REPO\n    branch: main\nthen run `advbook colab-sync` again")
    book = Book(Path(root))
    paths = notebooks if notebooks is not None else [book.source(c) for c in book.available()]
    return [p for p in paths if sync_notebook(p, repo)]
