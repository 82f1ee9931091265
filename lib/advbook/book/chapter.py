"""The chapter contract: one call opens a chapter, and a few helpers keep text and numbers in step.

Every notebook's set-up cell (tagged ``hide-input``, so the page shows only its output) is::

    from advbook.book import chapter
    from advbook.methods import primer
    ch = chapter.setup(primer, globals())
    cfg, dev, res = ch.cfg, ch.device, ch.results

A chapter is named once: its id is the methods module's ``CHAPTER``, which is the stem of its
notebook (``notebooks/00_primer.ipynb``), and its title is that notebook's heading, the first line
of its first cell (``# Primer: adversarial examples and adversarial training``).

:func:`setup` does, in this order and before any work:

0. reads the chapter's id from the module and its title from the notebook's heading
   (:func:`chapter_title`; a missing notebook or heading stops here, naming the file and what it lacks);
1. picks the chapter's parameters out of the notebook namespace (every name of
   :data:`advbook.params.COMMON` and of the module's ``SCHEMA``) and validates them with
   :func:`advbook.params.resolve` (profile ``auto`` resolved, ``None`` filled from the profile);
2. runs the module's cross-parameter checks, ``module.check(cfg)``, if it defines one;
3. resolves what "this profile" means elsewhere into ``cfg`` itself, so the results JSON
   records the real settings: ``cfg.recipe`` (the reference models' training recipe,
   the profile's :meth:`advbook.profiles.Profile.recipe`, with the chapter's ``epochs`` / ``eps``
   applied when the module lists them in ``RECIPE_OVERRIDES``) and ``cfg.autoattack`` (the
   profile's AutoAttack budget, :attr:`advbook.profiles.Profile.autoattack`);
4. picks the device and the training arithmetic (:func:`advbook.precision.resolve`: ``auto`` is bf16
   where the device has it natively; the resolved value goes into ``cfg.precision``), seeds everything,
   opens the :class:`advbook.results.ChapterResults` and applies the book's figure style;
5. shows a one-line summary (profile, dataset, device, training arithmetic, seed) and the *rerun box*: the exact
   commands that rerun this chapter, the time of this build and a link to the executed notebook.

Figures and key numbers are *glued* (myst-nb's ``glue``) so that the prose refers to the
values of this very run: ``ch.figure("primer-eps", fig)`` in code, then a Markdown cell with
``{glue:figure}`` and a caption; ``ch.glue("primer-at-robust", 0.47)`` in code, then
``{glue:text}`primer-at-robust:.1%``` in the prose.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

import torch

from .. import params, paths, plots, precision, profiles, results, runtime


class ChapterError(ValueError):
    """A chapter's notebook and methods module do not name it as the contract says (id, heading)."""


@dataclass
class Chapter:
    """What :func:`setup` returns: the resolved configuration and the run's handles."""

    id: str
    title: str
    cfg: params.Config
    device: torch.device
    results: results.ChapterResults
    given: dict
    """The parameter values as the notebook received them (``None``: the profile's default)."""

    def glue(self, name: str, value: Any) -> Any:
        """Make ``value`` available to the prose as ``{glue:text}`name``` (no output here); returns it."""
        glue(name, value)
        return value

    def figure(self, name: str, fig) -> None:
        """Glue a matplotlib figure for a numbered, captioned ``{glue:figure}`` in the next Markdown cell."""
        glue(name, fig)
        import matplotlib.pyplot as plt

        plt.close(fig)


def chapter_parameters(module: ModuleType) -> tuple[str, ...]:
    """The parameter names a chapter may have: the common ones and those of its module's ``SCHEMA``."""
    return tuple(dict.fromkeys([*params.COMMON, *getattr(module, "SCHEMA", {})]))


def chapter_id(module: ModuleType) -> str:
    """The chapter a methods module backs: its ``CHAPTER`` (the notebook's stem, ``00_primer``)."""
    chapter = getattr(module, "CHAPTER", None)
    if not isinstance(chapter, str) or not re.fullmatch(r"[0-9]{2}_\w+", chapter):  # paths.CHAPTER_GLOB's stems
        raise ChapterError(f"{getattr(module, '__name__', module)!s} must define CHAPTER, the stem of its notebook "
                           f"(e.g. CHAPTER = \"04_dominant_patterns\" for notebooks/04_dominant_patterns.ipynb); "
                           f"found {chapter!r}")
    return chapter


def chapter_title(chapter: str, root: str | os.PathLike | None = None) -> str:
    """The title of ``chapter``: the heading its notebook opens with (``notebooks/<id>.ipynb`` in the checkout
    at ``root``, default the one :func:`advbook.paths.find_root` finds): the first line of its first cell,
    ``# Title``.

    Raises :class:`ChapterError` naming the file when there is no such notebook, or when it does not open
    with a Markdown cell whose first line is a level-1 heading. Outside any checkout (Colab installs the
    library with pip and opens the notebook from GitHub: no notebook file is on disk) the title is the id;
    nothing a page shows depends on it (the book's chapter table, ``book/index.md``, names the chapters).
    """
    if root is None:
        root = paths.find_root()
        if root is None:
            return chapter
    path = paths.Book(Path(root)).source(chapter)
    try:
        cells = json.loads(path.read_text())["cells"]
    except FileNotFoundError:
        raise ChapterError(f"chapter {chapter!r} has no notebook {path}: a chapter's id (its methods module's "
                           "CHAPTER) is its notebook's file name") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ChapterError(f"{path} is not a readable notebook ({exc.__class__.__name__}: {exc})") from None
    first = cells[0] if cells else {}
    source = first.get("source", "")
    lines = ("".join(source) if isinstance(source, list) else source).strip().splitlines()
    heading = lines[0] if first.get("cell_type") == "markdown" and lines else ""
    if not heading.startswith("# ") or not heading[2:].strip():
        found = f"a {first.get('cell_type')} cell starting {heading or (lines[0] if lines else '')!r}" if cells else "no cells"
        raise ChapterError(f"{path} must open with the chapter's title: a Markdown cell whose first line is "
                           f"'# Title' (found {found[:120]})")
    return heading[2:].strip()


def setup(module: ModuleType, namespace: Mapping[str, Any], *, show: bool = True,
          root: str | os.PathLike | None = None) -> Chapter:
    """Validate and resolve a chapter's parameters, then open its run (see the module docstring).

    ``module`` is the chapter's methods module (its ``CHAPTER`` is the chapter's id, its notebook's
    heading the title: :func:`chapter_title`, in the checkout at ``root``, default this one).
    ``namespace`` is the notebook's ``globals()``: the values of its ``parameters`` cell, as
    papermill left them. Raises :class:`ChapterError` for a missing notebook or heading and
    :class:`advbook.params.ParameterError` for a bad value, within a second and before any data is loaded.
    """
    chapter = chapter_id(module)
    title = chapter_title(chapter, root)
    given = {name: namespace[name] for name in chapter_parameters(module) if name in namespace}
    cfg = params.resolve(given, module.PROFILES, getattr(module, "SCHEMA", {}))
    check = getattr(module, "check", None)
    if check is not None:
        check(cfg)
    if cfg.get("dataset") is not None and hasattr(module, "RECIPE_OVERRIDES"):  # it trains reference models
        overrides = {k: cfg.get(k) for k in module.RECIPE_OVERRIDES}
        cfg["recipe"] = profiles.get(cfg.profile).recipe(cfg.dataset, **overrides)
    cfg["autoattack"] = profiles.get(cfg.profile).autoattack_budget()
    dev = runtime.resolve_device(cfg.device)
    cfg["precision"] = precision.resolve(cfg.precision, dev)
    precision.set_training(cfg.precision)
    runtime.seed_everything(cfg.seed)
    res = results.ChapterResults(chapter, title, cfg, dev)
    plots.use_style()
    ch = Chapter(chapter, title, cfg, dev, res, given)
    if show:
        _display_markdown(summary_line(ch) + "\n\n" + rerun_box(ch))
    return ch


def summary_line(ch: Chapter) -> str:
    """``Profile quick · dataset mnist5k · CPU (2 threads) · seed 0``, in bold where it matters."""
    parts = [f"Profile **{ch.cfg.profile}**"]
    if ch.cfg.get("dataset"):
        parts.append(f"dataset **{ch.cfg.dataset}**")
    parts += [f"device `{runtime.device_name(ch.device)}`", f"training in {ch.cfg.precision}", f"seed {ch.cfg.seed}"]
    return " · ".join(parts)


def _cli_value(value: Any) -> str:
    return shlex.quote(str(value))


def rerun_commands(ch: Chapter) -> tuple[str, str]:
    """The runner and plain-papermill commands that rerun this chapter with this run's parameters.

    Parameters left at ``None`` (the profile's default) are not repeated; scalars go through
    ``-p`` (parsed as papermill does) and lists through ``-y`` (YAML).
    """
    flags = []
    for name, value in ch.given.items():
        if name == "profile" or value is None or (name, value) in (("device", "auto"), ("precision", "fp32")):
            continue
        if isinstance(value, (list, tuple, dict)):
            flags.append(f"-y {shlex.quote(f'{name}: {list(value) if isinstance(value, tuple) else value}')}")
        else:
            flags.append(f"-p {name} {_cli_value(value)}")
    extra = (" " + " ".join(flags)) if flags else ""
    runner = f"advbook run {ch.id} --profile {ch.cfg.profile}{extra}"
    papermill = (f"papermill notebooks/{ch.id}.ipynb {ch.id}.out.ipynb --cwd notebooks "
                 f"-p profile {ch.cfg.profile}{extra}")
    return runner, papermill


def rerun_box(ch: Chapter) -> str:
    """A collapsed MyST admonition: how to rerun this chapter, and what this build was."""
    runner, papermill = rerun_commands(ch)
    when = time.strftime("%Y-%m-%d %H:%M %Z")
    return "\n".join([
        ":::{admonition} Rerun this chapter",
        ":class: dropdown tip",
        f"This page was executed on {when} with profile `{ch.cfg.profile}` on `{runtime.device_name(ch.device)}`"
        f" (git `{ch.results.data['provenance']['git_sha'][:12]}`).",
        "From the repository root, with the book's environment (`make book` creates `.venv`):",
        "```bash",
        runner,
        papermill,
        "```",
        f"The executed notebook: {{download}}`{ch.id}.ipynb`. "
        "Any parameter of the first code cell can be changed the same way; "
        "a bad value stops at once with the allowed values.",
        ":::",
    ])


def glue(name: str, value: Any) -> None:
    """myst-nb's ``glue(name, value, display=False)``; a no-op where myst-nb is not installed.

    Without myst-nb (a plain papermill run with only the core dependencies) nothing reads the
    glued values, so skipping them changes no result.
    """
    try:
        from myst_nb import glue as _glue
    except ImportError:  # pragma: no cover - the book environment always has myst-nb
        return
    _glue(name, value, display=False)


def _display_markdown(text: str) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover
        print(text)
        return
    if get_ipython() is None:
        print(text)
    else:
        display(Markdown(text))


__all__ = ["Chapter", "ChapterError", "setup", "chapter_id", "chapter_title", "chapter_parameters", "summary_line", "rerun_commands",
           "rerun_box", "glue"]

