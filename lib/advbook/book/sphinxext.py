"""A small Sphinx extension for the book's site (listed in ``_config.yml``).

Jupyter Book 1.x registers some inline scripts twice on every page (sphinx-thebe's
``const THEBE_JS_URL = ...`` among them), and a ``const`` declared twice is an uncaught
``SyntaxError`` in every reader's browser console (``make check-site`` reports it). This
extension drops exact duplicates (same file or inline body, same attributes) from each
page's scripts and stylesheets just before the page is written; nothing else changes.
"""

from __future__ import annotations


def _key(asset) -> tuple:
    """What makes a script or stylesheet distinct: file (inline ones have ``None`` or ``''``), priority, attributes."""
    if isinstance(asset, str) and not hasattr(asset, "attributes"):
        return (asset,)
    attributes = getattr(asset, "attributes", {}) or {}
    return (getattr(asset, "filename", None) or "", getattr(asset, "priority", 500),
            tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _unique(items) -> list:
    """``items`` in order, without exact repeats."""
    kept, seen = [], set()
    for item in items:
        key = _key(item)
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def dedupe_assets(app, pagename, templatename, context, doctree) -> None:
    for key in ("script_files", "css_files"):
        if isinstance(context.get(key), list):
            context[key] = _unique(context[key])


def setup(app):
    # run after every other handler (MathJax and thebe add their scripts in this event too)
    app.connect("html-page-context", dedupe_assets, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
