"""Check the rendered site the way a reader sees it: ``make check-site``.

``python -m advbook.book.sitecheck [SITE]`` (default ``_build/html``) checks, page by page:

- **links**: every internal ``href`` (and a redirect's target) names a file of the site,
  and its ``#anchor``, if any, is an ``id`` on the target page; every local script,
  stylesheet and download exists; no script or stylesheet is loaded from the network
  (the book must read offline: MathJax comes from ``_static/mathjax``);
- **images**: every ``<img>`` file exists, is not empty and decodes (Pillow; SVG as XML;
  ``data:`` URIs are decoded too); an image from the network (a badge) cannot be checked
  offline and is listed as a note, not a problem;
- **in a browser** (Debian's Chromium, headless, with name resolution switched off so
  nothing can come from the network): the page loads, raises no uncaught JavaScript
  error, and on every page with math MathJax has typeset each equation: ``mjx-container``
  elements are present, no TeX error (``mjx-merror``) and no raw TeX (``\\(``, ``\\[``,
  ``$$``, ``$...\\cmd...$``) is left in the text outside code blocks.

- **content** (:func:`check_content`, on the page's HTML, no browser needed):

  - a *claims table* (a table with a column headed "verdict") has as many cells in every row as
    in its header, no empty verdict cell, and a verdict word (:data:`advbook.protocol.VERDICTS`)
    in its first verdict column: a ``|`` left unescaped in a Markdown cell splits the row and
    pushes the verdict out;
  - no absolute filesystem path of the build machine (``/home/...``, ``/work/...``,
    ``/tmp/...``, the book's own root) and no raw Python repr (``TensorData(``,
    ``<... object at 0x...>``, ``tensor([``, ``array([``, a float printed with 13 or more
    significant digits) in the text a reader sees: prose, tables and cell outputs (the code of
    cell inputs and code listings is not checked).

  Each finding names its rule. A rule in :data:`WARN_ONLY` is reported as a warning (listed,
  not a failure) while the chapters that break it are being fixed; ``--strict`` fails on it too.

It saves screenshots of the landing page, the Reproducibility page and one chapter, at desktop
(:data:`WINDOW`) and phone (:data:`PHONE`, ``-phone.png``) width, in ``_build/screenshots/``
and exits non-zero with a per-page list of problems. Chromium is installed with
``apt-get install -y chromium`` when it is missing and apt is usable (root); otherwise
the check stops with a message saying how to install it (or use ``--no-browser``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit
from xml.etree import ElementTree

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # offline: no host name resolves, so a page that needs the network fails the check
    "--host-resolver-rules=MAP * ~NOTFOUND",
)
VIRTUAL_TIME_MS = 15000
"""Virtual time given to each page before its DOM is read: MathJax has typeset by then."""
WINDOW = (1280, 1600)
"""Desktop screenshots: width, height in CSS pixels."""
PHONE = (390, 1600)
"""Phone-width screenshots (a 390 px wide phone; the theme's narrow layout)."""
SKIP_DIRS = ("_static", "_sources", "_images")
"""Folders of the site that hold assets, not pages."""
EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")
RAW_TEX = re.compile(r"\$\$.*?\$\$|\\\(.*?\\\)|\\\[.*?\\\]|\$\$|\\\(|\\\[|\\begin\{|\$[^$\n]*\\[a-zA-Z]+[^$\n]*\$", re.S)
"""TeX that MathJax should have replaced: ``\\(``, ``\\[``, ``$$``, ``\\begin{``, ``$..\\cmd..$``."""


BLOCK = {"address", "article", "aside", "blockquote", "br", "dd", "details", "div", "dl", "dt", "figcaption", "figure",
         "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
         "summary", "table", "td", "th", "tr", "ul"}
"""Elements that end a line of text: their text is not run together with the next element's."""
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
"""Elements without an end tag."""
HIDDEN_TAGS = {"head", "script", "style", "textarea", "template", "mjx-assistive-mml", "noscript"}
"""Elements whose text a reader does not see as page content."""
LISTING = re.compile(r"^highlight-")
"""The class of a code listing (``highlight-python``, ``highlight-bash``): code cell inputs, literal blocks,
literalinclude. A cell *output* has the class ``output`` as well, and is checked."""

STRAY_PATH = re.compile(
    r"(?<![\w.~/:%-])(?:/(?:home|work|tmp|root|Users|scratch|mnt|srv|private/var|var/folders|opt/conda)/"
    r"[^\s\"'<>`)\]|,;]+|[A-Za-z]:\\(?:Users|Documents and Settings)\\[^\s\"'<>]+)")
"""An absolute path of a build machine: a home, work, scratch or temporary folder (Unix, macOS, Windows)."""

FLOAT = re.compile(r"(?<![\w.])-?(\d+)\.(\d+)(?:[eE][-+]?\d+)?(?![\w.])")
LONG_FLOAT_DIGITS = 13
"""A float with this many significant digits or more was printed by ``repr`` (``0.05355435609817505``), not
formatted for a reader."""

REPRS = (
    ("TensorData(", re.compile(r"\bTensorData\(")),
    ("<... object at 0x...>", re.compile(r"<[\w.]+(?: [\w.]+)* object at 0x[0-9a-fA-F]+>")),
    ("tensor(...)", re.compile(r"\btensor\((?:\[|-?\d)")),
    ("array([...])", re.compile(r"\barray\(\[")),
)
"""Raw Python reprs: (name, pattern)."""

RULES = {
    "claims table": "a claims table row with the wrong number of cells, an empty verdict, or no verdict word",
    "stray path": "an absolute filesystem path of the build machine",
    "raw repr": "a raw Python repr or a float with 13 or more significant digits",
}
"""The content rules of :func:`check_content`, by the name each finding starts with."""

WARN_ONLY: set[str] = set()
"""Content rules reported as warnings, not failures, while existing chapters break them (issue 27). Empty since
the chapters stopped printing results paths, ``TensorData(...)`` reprs and 17-digit floats (2026-12-03); add a
rule here only while a chapter is being fixed. ``--strict`` fails on all."""


class SiteCheckError(RuntimeError):
    """The check cannot run (no site, no browser); not a problem found in the site."""


# --------------------------------------------------------------------------- parsing


class _Html(HTMLParser):
    """What the checks need from one HTML document (a source page or a browser's DOM)."""

    SKIP_TEXT = {"pre", "code", "script", "style", "textarea", "mjx-assistive-mml"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []  # <a href>, <area href>, meta refresh targets
        self.images: list[str] = []
        self.resources: list[str] = []  # <script src>, <link href> (stylesheets, icons)
        self.math = 0  # elements Sphinx marks as math (class "math")
        self.mjx = 0  # MathJax output (<mjx-container>)
        self.merror = 0  # MathJax TeX errors (<mjx-merror>)
        self.raw_tex: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False
        self.tables: list[list[tuple[bool, list[tuple[str, int]]]]] = []
        """Every table: its rows as (header row?, [(cell text, colspan)])."""
        self.shown: list[str] = []
        """Text a reader sees as content (no scripts, no code listings; cell outputs included)."""
        self.prose_code: list[str] = []
        """The part of :attr:`shown` in inline ``<code>`` of the prose (an example command an author typed)."""
        self._code = 0
        self._open: list[tuple[str, bool]] = []  # open elements: (tag, hides its text)
        self._hidden = 0
        self._tables: list[dict] = []  # tables being read (nested tables have their own)

    def _table_start(self, tag: str, a: dict) -> None:
        if tag == "table":
            self._tables.append({"rows": [], "row": None, "cell": None, "head": False})
        elif not self._tables:
            return
        t = self._tables[-1]
        if tag == "thead":
            t["head"] = True
        elif tag in ("tbody", "tfoot"):
            t["head"] = False
        elif tag == "tr":
            self._table_end("tr")
            t["row"] = (t["head"], [])
        elif tag in ("td", "th"):
            self._table_end("td")
            if t["row"] is None:
                t["row"] = (t["head"], [])
            try:
                span = max(1, int(a.get("colspan") or 1))
            except ValueError:
                span = 1
            t["cell"] = [[], span, tag == "th"]

    def _table_end(self, tag: str) -> None:
        if not self._tables:
            return
        t = self._tables[-1]
        if tag in ("td", "th", "tr", "table") and t["cell"] is not None and t["row"] is not None:
            t["row"][1].append((" ".join("".join(t["cell"][0]).split()), t["cell"][1]))
            t["cell"] = None
        if tag in ("tr", "table") and t["row"] is not None:
            head, cells = t["row"]
            t["rows"].append((head, cells))
            t["row"] = None
        if tag == "table":
            self.tables.append(self._tables.pop()["rows"])

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._table_start(tag, a)
        if tag in BLOCK:
            self.shown.append("\n")
        if tag not in VOID:
            classes = set((a.get("class") or "").split())
            hides = (tag in HIDDEN_TAGS or "cell_input" in classes
                     or (any(LISTING.match(c) for c in classes) and "output" not in classes
                         and not any(h is None for _, h in self._open)))
            in_output = "cell_output" in classes or any(h is None for _, h in self._open)
            code = tag == "code" and not in_output
            self._open.append((tag, True if hides else (None if "cell_output" in classes else ("code" if code else False))))
            self._hidden += hides
            self._code += code
        for key in ("id",):
            if a.get(key):
                self.ids.add(a[key])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        if tag in ("a", "area") and a.get("href") is not None:
            self.links.append(a["href"])
        elif tag == "img" and a.get("src") is not None:
            self.images.append(a["src"])
        elif tag == "script" and a.get("src"):
            self.resources.append(a["src"])
        elif tag == "link" and a.get("href") and set((a.get("rel") or "").split()) & {"stylesheet", "icon", "preload"}:
            self.resources.append(a["href"])
        elif tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh":
            m = re.search(r"url\s*=\s*['\"]?([^'\"]+)", a.get("content") or "", re.I)
            if m:
                self.links.append(m.group(1).strip())
        if "math" in (a.get("class") or "").split() and tag in ("span", "div"):
            self.math += 1
        if tag == "mjx-container":
            self.mjx += 1
        elif tag == "mjx-merror":
            self.merror += 1
        elif tag == "title":
            self._in_title = True
        if tag in self.SKIP_TEXT:
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP_TEXT and self._skip:
            self._skip -= 1
        if tag == "title":
            self._in_title = False
        if tag in ("td", "th", "tr", "table"):
            self._table_end(tag)
        if tag in BLOCK:
            self.shown.append("\n")
        if tag not in VOID and any(t == tag for t, _ in self._open):
            while self._open:  # close the element and any left open inside it
                t, hides = self._open.pop()
                self._hidden -= hides is True
                self._code -= hides == "code"
                if t == tag:
                    break

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._tables and self._tables[-1]["cell"] is not None and not self._hidden:
            self._tables[-1]["cell"][0].append(data)
        if not self._hidden:
            self.shown.append(data)
            if self._code:
                self.prose_code.append(data)
        if self._skip:
            return
        for m in RAW_TEX.finditer(data):
            start = max(0, m.start() - 30)
            self.raw_tex.append(" ".join(data[start:m.end() + 30].split()))


def parse(text: str) -> _Html:
    page = _Html()
    page.feed(text)
    page.close()
    return page


# --------------------------------------------------------------------------- static checks


@dataclass
class Report:
    """Problems found, by page (path relative to the site), plus counts for the summary."""

    site: Path
    problems: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    """What could not be checked (images from the network): reported, not a failure."""
    counts: dict[str, int] = field(default_factory=lambda: dict(pages=0, links=0, images=0, math_pages=0, equations=0))
    screenshots: list[Path] = field(default_factory=list)
    browser: bool = False
    seconds: float = 0.0

    warnings: dict[str, list[str]] = field(default_factory=dict)
    """Findings of the rules in :data:`WARN_ONLY`: listed, not a failure."""

    def warn(self, page: str, text: str) -> None:
        self.warnings.setdefault(page, []).append(text)

    def note(self, page: str, text: str) -> None:
        self.notes.setdefault(page, []).append(text)

    def add(self, page: str, problem: str) -> None:
        self.problems.setdefault(page, []).append(problem)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        c = self.counts
        n = sum(len(p) for p in self.problems.values())
        lines = [
            f"check-site: {self.site}: {c['pages']} pages, {c['links']} internal links, {c['images']} images, "
            + (f"{c['math_pages']} pages with math ({c['equations']} equations typeset by MathJax)"
               if self.browser else "browser checks skipped (--no-browser): math rendering NOT checked")
            + f"; {self.seconds:.1f} s"
        ]
        for path in self.screenshots:
            lines.append(f"screenshot: {path}")
        external = sorted({n for notes in self.notes.values() for n in notes})
        if external:
            lines.append(f"note: not checked (from the network, {sum(map(len, self.notes.values()))} on "
                         f"{len(self.notes)} page(s)): " + ", ".join(external[:3]) + (" ..." if len(external) > 3 else ""))
        if self.warnings:
            n_warn = sum(len(w) for w in self.warnings.values())
            rules = sorted({w.split(":", 1)[0] for ws in self.warnings.values() for w in ws})
            lines.append(f"WARNING (not a failure; rules {', '.join(rules)}): {n_warn} finding(s) on "
                         f"{len(self.warnings)} page(s)")
            for page in sorted(self.warnings):
                lines.append(page)
                lines += [f"  ~ {w}" for w in self.warnings[page]]
        if not self.problems:
            lines.append("OK: no problems found")
            return "\n".join(lines)
        lines.append(f"FAILED: {n} problem(s) on {len(self.problems)} page(s)")
        for page in sorted(self.problems):
            lines.append(page)
            lines += [f"  - {p}" for p in self.problems[page]]
        return "\n".join(lines)


def pages(site: Path) -> list[Path]:
    """Every HTML page of the site, assets folders excluded, sorted."""
    return sorted(p for p in site.rglob("*.html") if not set(p.relative_to(site).parts[:1]) & set(SKIP_DIRS))


def resolve_local(site: Path, page: Path, ref: str) -> tuple[Path | None, str, str]:
    """Resolve a local reference from ``page``: (file or None if outside the site, fragment, problem)."""
    parts = urlsplit(ref)
    fragment = unquote(parts.fragment)
    if not parts.path:
        return page, fragment, ""
    # normpath, not resolve(): a symlinked asset folder is still part of the site
    target = Path(os.path.normpath(page.parent / unquote(parts.path)))
    try:
        target.relative_to(site)
    except ValueError:
        return None, fragment, f"points outside the site ({ref})"
    if target.is_dir():
        target = target / "index.html"
    return target, fragment, ""


def check_image_bytes(data: bytes, name: str) -> str:
    """An empty string if ``data`` is a non-empty, decodable image, else what is wrong."""
    if not data:
        return "is empty"
    if name.lower().endswith(".svg") or data.lstrip()[:5] in (b"<?xml", b"<svg ") or data.lstrip().startswith(b"<svg"):
        try:
            root = ElementTree.fromstring(data)
        except ElementTree.ParseError as exc:
            return f"is not valid SVG ({exc})"
        return "" if root.tag.endswith("svg") else f"is XML but not SVG (root <{root.tag}>)"
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.width == 0 or img.height == 0:
                return "has zero size"
    except Exception as exc:  # Pillow raises several types for truncated or unknown data
        return f"does not decode ({exc.__class__.__name__}: {exc})"
    return ""


def check_image(site: Path, page: Path, src: str) -> str:
    """Check one ``<img src>``; returns a problem or ''."""
    if src.startswith("data:"):
        head, _, payload = src.partition(",")
        try:
            data = base64.b64decode(payload, validate=True) if head.endswith(";base64") else unquote(payload).encode()
        except (binascii.Error, ValueError) as exc:
            return f"image data URI does not decode ({exc})"
        why = check_image_bytes(data, "x.svg" if "svg" in head else "x")
        return f"image data URI {why}" if why else ""
    if EXTERNAL.match(src):
        return ""  # see check_static: a note, not a problem
    target, _, why = resolve_local(site, page, src)
    if why:
        return f"image {why}"
    if not target.is_file():
        return f"image {src}: file not found"
    why = check_image_bytes(target.read_bytes(), target.name)
    return f"image {src} {why}" if why else ""


def check_static(site: Path, report: Report, strict: bool = False) -> dict[str, _Html]:
    """Links, anchors, resources, images and content rules of every page, without a browser (``strict``: the rules
    in :data:`WARN_ONLY` fail too). Returns the parsed pages."""
    site = Path(os.path.abspath(site))
    parsed: dict[Path, _Html] = {p: parse(p.read_text(errors="replace")) for p in pages(site)}
    report.counts["pages"] = len(parsed)
    ids_cache: dict[Path, set[str]] = {p: h.ids for p, h in parsed.items()}
    own = machine_paths(site)
    for path, html in parsed.items():
        name = str(path.relative_to(site))
        for finding in check_content(html, own):
            if finding.split(":", 1)[0] in WARN_ONLY and not strict:
                report.warn(name, finding)
            else:
                report.add(name, finding)
        for ref in html.links:
            if not ref or EXTERNAL.match(ref):
                continue
            report.counts["links"] += 1
            target, fragment, why = resolve_local(site, path, ref)
            if why:
                report.add(name, f"link {why}")
                continue
            if not target.is_file():
                report.add(name, f"link {ref}: {target.relative_to(site)} does not exist")
                continue
            if fragment and target.suffix == ".html":
                if target not in ids_cache:
                    ids_cache[target] = parse(target.read_text(errors="replace")).ids
                if fragment not in ids_cache[target]:
                    report.add(name, f"link {ref}: no id {fragment!r} on {target.relative_to(site)}")
        for ref in html.resources:
            if EXTERNAL.match(ref):
                report.add(name, f"{ref} is loaded from the network (the site must read offline)")
                continue
            target, _, why = resolve_local(site, path, ref)
            if why or not target.is_file():
                report.add(name, f"resource {ref}: " + (why or "file not found"))
        for src in html.images:
            if EXTERNAL.match(src) and not src.startswith("data:"):
                report.note(name, f"image {src}")
                continue
            report.counts["images"] += 1
            why = check_image(site, path, src)
            if why:
                report.add(name, why)
    return {str(p.relative_to(site)): h for p, h in parsed.items()}


def _verdict_words() -> tuple[str, ...]:
    from ..protocol import VERDICTS

    return VERDICTS


def check_claims_tables(html: _Html) -> list[str]:
    """Rows of the page's claims tables (a header cell says "verdict") with the wrong number of cells, an empty
    verdict, or no verdict word in the first verdict column."""
    words = _verdict_words()
    found = []
    for number, rows in enumerate(html.tables, 1):
        if not rows:
            continue
        head = next((cells for is_head, cells in rows if is_head), rows[0][1])
        columns = [text for text, span in head for _ in range(span)]
        verdict_cols = [i for i, text in enumerate(columns) if re.search(r"\bverdict", text, re.I)]
        if not verdict_cols:
            continue
        body = [cells for is_head, cells in rows if cells is not head and not is_head]
        for r, cells in enumerate(body, 1):
            flat = [text for text, span in cells for _ in range(span)]
            label = f"claims table {number}, row {r} ({(flat[0] if flat else '')[:60]!r})"
            if len(flat) != len(columns):
                found.append(f"claims table: {label} has {len(flat)} cells, its header {len(columns)}")
                continue
            for i in verdict_cols:
                if not flat[i].strip():
                    found.append(f"claims table: {label}: empty cell under {columns[i]!r}")
            first = flat[verdict_cols[0]]
            if first.strip() and not any(w in first.lower() for w in words):
                found.append(f"claims table: {label}: no verdict word under {columns[verdict_cols[0]]!r} "
                             f"(it reads {first[:60]!r})")
    return found


def _snippet(text: str, start: int, end: int) -> str:
    return " ".join(text[max(0, start - 30):end + 30].split())


def check_text(html: _Html, machine_paths: tuple[str, ...] = ()) -> list[str]:
    """Absolute paths of the build machine and raw Python reprs in the text a reader sees (:attr:`_Html.shown`).

    A path under a home, work or temporary folder counts anywhere but in the prose's inline code, where an author
    types an example (``ADVBOOK_CACHE=/tmp/beta3``); the book's own root (``machine_paths``) counts everywhere.
    Each distinct path is one finding; each kind of repr one finding with its count and first example.
    """
    text = "".join(html.shown)
    examples = set(html.prose_code)
    found, seen = [], set()

    def path(start: int, end: int) -> None:
        value = text[start:end].rstrip(".:")  # the end of a sentence is not part of the path
        if value not in seen:
            seen.add(value)
            found.append(f"stray path: {value[:200]!r} in {_snippet(text, start, end)!r}")

    for root in machine_paths:
        start = text.find(root)
        while start >= 0:
            end = start + len(root)
            m = re.match(r"[^\s\"'<>`)\]|,;]*", text[end:])
            path(start, end + (m.end() if m else 0))
            start = text.find(root, start + 1)
    for m in STRAY_PATH.finditer(text):
        if not any(m.group(0) in example for example in examples):
            path(m.start(), m.end())
    for name, pattern in REPRS:
        hits = list(pattern.finditer(text))
        if hits:
            found.append(f"raw repr: {name} x{len(hits)}, first in {_snippet(text, hits[0].start(), hits[0].end())!r}")
    long = [m for m in FLOAT.finditer(text) if len((m.group(1) + m.group(2)).lstrip("0")) >= LONG_FLOAT_DIGITS]
    if long:
        m = long[0]
        found.append(f"raw repr: {len(long)} float(s) printed with {LONG_FLOAT_DIGITS} or more significant digits, "
                     f"first in {_snippet(text, m.start(), m.end())!r}")
    return found


def check_content(html: _Html, machine_paths: tuple[str, ...] = ()) -> list[str]:
    """The content rules (:data:`RULES`) on one parsed page: each finding starts with its rule's name."""
    return check_claims_tables(html) + check_text(html, machine_paths)


def machine_paths(site: Path) -> tuple[str, ...]:
    """The build machine's own paths a page must not show: the folder holding the site's ``_build`` (the book's
    root), when it is at least two levels deep (``/srv/books/advbook``, not ``/srv``)."""
    site = Path(os.path.abspath(site))
    root = site.parent.parent if site.parent.name == "_build" else site.parent
    return (str(root),) if len(root.parts) >= 3 else ()


def check_dom(source: _Html, dom_text: str, console: str = "") -> list[str]:
    """Problems in a page's DOM after the browser ran its scripts (``--dump-dom``), given its source."""
    problems = []
    dom = parse(dom_text)
    if "<body" not in dom_text or (source.title.strip() and source.title.strip() not in dom.title):
        return [f"did not load in the browser (title {source.title.strip()!r} not found in the DOM)"]
    if source.math:
        if dom.mjx == 0:
            problems.append(f"{source.math} equation(s) not typeset: no MathJax output in the page")
        elif dom.mjx < source.math:
            problems.append(f"only {dom.mjx} of {source.math} equations typeset by MathJax")
    if dom.merror:
        problems.append(f"{dom.merror} MathJax TeX error(s) (mjx-merror)")
    for snippet in dom.raw_tex[:5]:
        problems.append(f"raw TeX left in the text: {snippet!r}")
    if len(dom.raw_tex) > 5:
        problems.append(f"... and {len(dom.raw_tex) - 5} more raw TeX fragment(s)")
    for line in console.splitlines():
        if "CONSOLE" in line and "Uncaught" in line:
            problems.append("JavaScript error: " + line.split("]", 1)[-1].strip()[:200])
    return problems


# --------------------------------------------------------------------------- browser


def find_chromium() -> str | None:
    """The Chromium binary: ``$CHROMIUM`` if set, else the first of :data:`CHROMIUM_NAMES` on PATH."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def ensure_chromium(install: bool = True, log=print) -> str:
    """Return Chromium's path, installing Debian's ``chromium`` with apt when missing and possible."""
    found = find_chromium()
    if found:
        return found
    how = "install it (Debian/Ubuntu: `sudo apt-get install -y chromium`) or set CHROMIUM=/path/to/chrome"
    if not install:
        raise SiteCheckError(f"Chromium not found (looked for {', '.join(CHROMIUM_NAMES)}); {how}")
    apt = shutil.which("apt-get")
    if not apt or os.geteuid() != 0:
        why = "apt-get is not available" if not apt else "installing needs root"
        raise SiteCheckError(f"Chromium not found and cannot be installed here ({why}); {how}, "
                             "or run with --no-browser to skip the browser checks")
    log("Chromium not found: installing Debian's chromium with apt-get ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "--no-install-recommends", "chromium"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SiteCheckError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}; {how}")
    found = find_chromium()
    if not found:
        raise SiteCheckError(f"apt-get installed chromium but no binary named {CHROMIUM_NAMES} is on PATH; {how}")
    return found


def chromium(binary: str, url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run headless Chromium once on ``url`` with a fresh profile directory."""
    with tempfile.TemporaryDirectory(prefix="advbook-chromium-") as profile:
        cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
               f"--virtual-time-budget={VIRTUAL_TIME_MS}", *args, url]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(cmd, 124, exc.stdout or "", f"timed out after {timeout:.0f} s")


def browse_page(binary: str, site: Path, name: str, source: _Html) -> tuple[list[str], int]:
    """Load one page, return (problems, equations typeset)."""
    proc = chromium(binary, Path(os.path.abspath(site / name)).as_uri(), "--dump-dom")
    if proc.returncode != 0 or not proc.stdout.strip():
        return [f"Chromium failed on the page (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"], 0
    return check_dom(source, proc.stdout, proc.stderr), parse(proc.stdout).mjx


def landing_page(site: Path) -> Path:
    """The page a reader lands on: ``index.html``, or the page it redirects to."""
    index = site / "index.html"
    html = parse(index.read_text(errors="replace"))
    if not html.title.strip() and html.links:
        target, _, why = resolve_local(Path(os.path.abspath(site)), Path(os.path.abspath(index)), html.links[0])
        if not why and target is not None and target.is_file():
            return target
    return index


def pick_chapter(site: Path, chapter: str | None, parsed: dict[str, _Html]) -> Path | None:
    """The chapter to screenshot: the first under ``book/chapters`` matching ``chapter`` (a prefix), else the first with math."""
    names = sorted(n for n in parsed if "/chapters/" in f"/{n}")
    if chapter:
        names = [n for n in names if Path(n).stem.startswith(chapter)]
        if not names:
            raise SiteCheckError(f"no chapter page starting with {chapter!r} in {site}")
    names = names or sorted(n for n, h in parsed.items() if h.math)
    return site / names[0] if names else None


MIN_WINDOW_WIDTH = 500
"""Headless Chromium never makes its window narrower than this (CSS pixels): a phone-width page is laid out in
an ``<iframe>`` of the phone's width instead, so its media queries see the phone's width, and the image is
cropped to it."""


def screenshot(binary: str, page: Path, out: Path, window: tuple[int, int] = WINDOW) -> str:
    """Screenshot ``page`` to ``out`` (PNG) in a ``window`` (width, height); returns a problem or ''."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    url = Path(os.path.abspath(page)).as_uri()
    size = window
    with tempfile.TemporaryDirectory(prefix="advbook-shot-") as tmp:
        if window[0] < MIN_WINDOW_WIDTH:
            frame = Path(tmp) / "frame.html"
            frame.write_text("<!DOCTYPE html><html><head><style>html,body{margin:0;padding:0;overflow:hidden}</style>"
                             f'</head><body><iframe src="{url}" style="width:{window[0]}px;height:{window[1]}px;'
                             'border:0;display:block"></iframe></body></html>')
            url, size = frame.as_uri(), (MIN_WINDOW_WIDTH, window[1])
        proc = chromium(binary, url, f"--screenshot={os.path.abspath(out)}", f"--window-size={size[0]},{size[1]}",
                        "--hide-scrollbars", "--force-device-scale-factor=1")
    if not out.is_file():
        return f"screenshot failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
    from PIL import Image

    with Image.open(out) as img:
        if img.size != tuple(window):
            img.crop((0, 0, min(window[0], img.width), min(window[1], img.height))).save(out)
    with Image.open(out) as img:
        lo, hi = img.convert("L").getextrema()
        if lo == hi:
            return f"screenshot {out.name} is a blank image"
    return ""


def check_site(site: str | os.PathLike = "_build/html", browser: bool = True, install: bool = True,
               screenshots: str | os.PathLike | None = "_build/screenshots", chapter: str | None = None,
               jobs: int = 2, log=print, strict: bool = False, phone: bool = True) -> Report:
    """Run every check on a built site and return the report (see the module docstring)."""
    start = time.perf_counter()
    site = Path(site)
    if not (site / "index.html").is_file():
        raise SiteCheckError(f"no site at {site} (no index.html): build it first with `make book` "
                             "(or `make book PROFILE=tiny` for a quick one)")
    report = Report(site)
    parsed = check_static(site, report, strict)
    if browser:
        binary = ensure_chromium(install, log)
        report.browser = True
        names = sorted(parsed)
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            results = list(pool.map(lambda n: browse_page(binary, site, n, parsed[n]), names))
        for name, (problems, typeset) in zip(names, results):
            for p in problems:
                report.add(name, p)
            if parsed[name].math:
                report.counts["math_pages"] += 1
                report.counts["equations"] += typeset
        if screenshots is not None:
            shots = Path(screenshots)
            targets = [("landing", landing_page(site))]
            summary = next((site / n for n in sorted(parsed) if Path(n).name == "reproducibility.html"), None)
            if summary is not None:
                targets.append(("reproducibility", summary))
            chap = pick_chapter(site, chapter, parsed)
            if chap is not None:
                targets.append((f"chapter-{chap.stem}", chap))
            sizes = [("", WINDOW)] + ([("-phone", PHONE)] if phone else [])
            for stem, page in targets:
                for suffix, window in sizes:
                    filename = f"{stem}{suffix}.png"
                    why = screenshot(binary, page, shots / filename, window)
                    if why:
                        report.add(os.path.relpath(page, site), why)
                    else:
                        report.screenshots.append(shots / filename)
    report.seconds = time.perf_counter() - start
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m advbook.book.sitecheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("site", nargs="?", default="_build/html", help="the built site (default: _build/html)")
    parser.add_argument("--screenshots", default="_build/screenshots", help="folder for the screenshots")
    parser.add_argument("--chapter", help="chapter to screenshot (id or prefix; default: the first)")
    parser.add_argument("--no-browser", action="store_true", help="static checks only (math rendering not checked)")
    parser.add_argument("--no-install", action="store_true", help="never install Chromium with apt-get")
    parser.add_argument("--no-phone", action="store_true", help="desktop-width screenshots only")
    parser.add_argument("--jobs", type=int, default=2, help="pages loaded in parallel (default 2)")
    parser.add_argument("--strict", action="store_true",
                        help=f"fail on the warning-only content rules too ({', '.join(sorted(WARN_ONLY)) or 'none now'})")
    args = parser.parse_args(argv)
    try:
        report = check_site(args.site, browser=not args.no_browser, install=not args.no_install,
                            screenshots=args.screenshots, chapter=args.chapter, jobs=args.jobs, strict=args.strict, phone=not args.no_phone)
    except SiteCheckError as exc:
        print(f"check-site: error: {exc}", file=sys.stderr)
        return 2
    print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
