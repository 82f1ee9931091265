"""advbook.sitecheck on a tiny generated site: links, anchors, images, MathJax output, exit codes.

The static checks and the DOM analysis need no browser. The browser tests run Debian's
Chromium on the tiny site with the MathJax copy shipped by sphinx-mathjax-offline, and are
skipped (saying why) where either is missing.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from advbook import sitecheck

MATH_PAGE = """<!DOCTYPE html><html><head><title>Chapter A</title>
<script defer src="../../_static/mathjax/tex-chtml.js"></script></head>
<body><main><h1 id="chapter-a">Chapter A</h1>
<p>Inline <span class="math notranslate nohighlight">\\(x^2 + \\varepsilon\\)</span> and display:</p>
<div class="math notranslate nohighlight">\\[\\min_\\theta \\max_{\\|\\delta\\|_\\infty \\le \\varepsilon} L(\\theta)\\]</div>
<section id="sec-1"><h2>Section</h2><pre>re.compile(r"\\(a\\)")  # raw TeX-like text in code is fine</pre>
<a href="../index.html">home</a> <a href="#chapter-a">top</a></section></main></body></html>
"""


def _png(colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buf, format="PNG")
    return buf.getvalue()


def make_site(root: Path, mathjax: Path | None = None) -> Path:
    """A three-page site shaped like Jupyter Book's output: a redirect, a landing page, a chapter with math."""
    site = root / "html"
    (site / "book" / "chapters").mkdir(parents=True)
    (site / "_images").mkdir()
    (site / "_static").mkdir()
    (site / "index.html").write_text('<html><head><meta http-equiv="Refresh" content="0; url=book/index.html" />'
                                     "</head></html>")
    data_uri = "data:image/png;base64," + base64.b64encode(_png((30, 30, 200))).decode()
    (site / "book" / "index.html").write_text(
        '<!DOCTYPE html><html><head><title>Landing</title><link rel="stylesheet" href="../_static/style.css">'
        '</head><body><h1 id="top">A small book</h1><p>See <a href="chapters/a.html#sec-1">chapter A</a>, '
        '<a href="chapters/a.html">again</a>, <a href="#top">up</a>, <a href="https://example.org/">a paper</a>, '
        '<a href="mailto:x@example.org">mail</a>.</p>'
        f'<img src="../_images/fig.png" alt="figure"><img src="{data_uri}" alt="inline figure">'
        '<img src="../_images/fig.svg" alt="vector figure">'
        '<img src="https://img.example.org/badge.svg" alt="a badge from the network"></body></html>')
    (site / "book" / "chapters" / "a.html").write_text(MATH_PAGE)
    (site / "_images" / "fig.png").write_bytes(_png())
    (site / "_images" / "fig.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4">'
                                              '<rect width="4" height="4" fill="red"/></svg>')
    (site / "_static" / "style.css").write_text("body { font-family: sans-serif; background: #fff; }")
    if mathjax is not None:
        os.symlink(mathjax, site / "_static" / "mathjax")
    else:
        (site / "_static" / "mathjax").mkdir()
        (site / "_static" / "mathjax" / "tex-chtml.js").write_text("/* stand-in: no browser in this test */")
    return site


def static_report(site: Path) -> sitecheck.Report:
    report = sitecheck.Report(site)
    sitecheck.check_static(site, report)
    return report


def test_a_sound_site_has_no_static_problems(tmp_path):
    site = make_site(tmp_path)
    report = static_report(site)
    assert report.ok, report.text()
    assert report.counts["pages"] == 3
    assert report.counts["images"] == 3
    # an image from the network cannot be checked offline: a note, not a failure
    assert report.notes == {"book/index.html": ["image https://img.example.org/badge.svg"]}
    assert "note: not checked" in report.text()
    # redirect + 3 links on the landing page + 2 on the chapter (external and mailto are not counted)
    assert report.counts["links"] == 6


def test_broken_links_anchors_images_and_network_assets_are_reported_per_page(tmp_path):
    site = make_site(tmp_path)
    landing = site / "book" / "index.html"
    html = landing.read_text()
    html = html.replace("chapters/a.html#sec-1", "chapters/a.html#no-such-section")
    html = html.replace('href="chapters/a.html"', 'href="chapters/missing.html"')
    html = html.replace("</body>", '<img src="../_images/gone.png"><img src="../_images/empty.png">'
                                   '<img src="../_images/bad.png"><a href="../../outside.html">out</a>'
                                   '<script src="https://cdn.example.org/mathjax.js"></script></body>')
    landing.write_text(html)
    (site / "_images" / "empty.png").write_bytes(b"")
    (site / "_images" / "bad.png").write_bytes(_png()[:40])  # a truncated PNG
    (site / "_static" / "style.css").unlink()
    report = static_report(site)
    problems = report.problems["book/index.html"]
    text = "\n".join(problems)
    assert "no id 'no-such-section' on book/chapters/a.html" in text
    assert "book/chapters/missing.html does not exist" in text
    assert "image ../_images/gone.png: file not found" in text
    assert "image ../_images/empty.png is empty" in text
    assert "image ../_images/bad.png does not decode" in text
    assert "points outside the site" in text
    assert "https://cdn.example.org/mathjax.js is loaded from the network" in text
    assert "resource ../_static/style.css: file not found" in text
    assert len(problems) == 8
    assert set(report.problems) == {"book/index.html"}


def test_image_checks_cover_svg_and_data_uris():
    assert sitecheck.check_image_bytes(_png(), "a.png") == ""
    assert sitecheck.check_image_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "a.svg") == ""
    assert "not valid SVG" in sitecheck.check_image_bytes(b"<svg><rect></svg>", "a.svg")
    assert "does not decode" in sitecheck.check_image_bytes(b"GIF89a-not-really", "a.gif")
    site = Path("/nonexistent")
    assert "does not decode" in sitecheck.check_image(site, site / "p.html", "data:image/png;base64,AAAA")
    assert "does not decode" in sitecheck.check_image(site, site / "p.html", "data:image/png;base64,***")


def test_dom_with_mathjax_output_passes_and_raw_tex_or_errors_fail():
    source = sitecheck.parse(MATH_PAGE)
    assert source.math == 2 and "sec-1" in source.ids
    rendered = MATH_PAGE.replace(
        "\\(x^2 + \\varepsilon\\)", "<mjx-container class='MathJax' jax='CHTML'><mjx-math></mjx-math></mjx-container>"
    ).replace("\\[\\min_\\theta \\max_{\\|\\delta\\|_\\infty \\le \\varepsilon} L(\\theta)\\]",
              "<mjx-container class='MathJax' display='true'><mjx-math></mjx-math></mjx-container>")
    assert sitecheck.check_dom(source, rendered) == []
    # MathJax never ran: the TeX is still there
    problems = sitecheck.check_dom(source, MATH_PAGE)
    assert any("2 equation(s) not typeset" in p for p in problems)
    assert any("raw TeX left" in p and "varepsilon" in p for p in problems)
    # only one equation typeset, one TeX error
    half = MATH_PAGE.replace("\\(x^2 + \\varepsilon\\)", "<mjx-container><mjx-merror>?</mjx-merror></mjx-container>")
    problems = sitecheck.check_dom(source, half)
    assert any("only 1 of 2 equations typeset" in p for p in problems)
    assert any("TeX error" in p for p in problems)
    # dollar math that the Markdown parser left alone is raw TeX too
    prose = rendered.replace("<p>Inline", "<p>costs $\\alpha$ and $$y$$ here; plain $5 and $10 are fine. Inline")
    problems = sitecheck.check_dom(source, prose)
    assert len([p for p in problems if "raw TeX" in p]) == 2
    # a JavaScript error in the console, and a page that did not load
    console = '[1:1:INFO:CONSOLE:1] "Uncaught SyntaxError: Identifier \'X\' has already been declared", source: a.html'
    assert any("JavaScript error" in p for p in sitecheck.check_dom(source, rendered, console))
    assert "did not load" in sitecheck.check_dom(source, "<html><head><title>404</title></head><body></body></html>")[0]


def test_main_exit_codes_without_a_browser(tmp_path, capsys):
    site = make_site(tmp_path)
    assert sitecheck.main([str(site), "--no-browser"]) == 0
    assert "math rendering NOT checked" in capsys.readouterr().out
    (site / "_images" / "fig.png").unlink()
    assert sitecheck.main([str(site), "--no-browser"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 1 problem(s) on 1 page(s)" in out and "book/index.html\n  - image ../_images/fig.png" in out
    assert sitecheck.main([str(tmp_path / "nothing-here"), "--no-browser"]) == 2
    assert "build it first" in capsys.readouterr().err


def test_missing_chromium_gives_a_clear_message(monkeypatch):
    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.setattr(sitecheck.shutil, "which", lambda name: None)
    with pytest.raises(sitecheck.SiteCheckError, match="apt-get install -y chromium"):
        sitecheck.ensure_chromium(install=False)
    with pytest.raises(sitecheck.SiteCheckError, match="--no-browser"):
        sitecheck.ensure_chromium(install=True)  # no apt-get on PATH (which() finds nothing)


def _mathjax_dir() -> Path | None:
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "static" / "mathjax"
    return path if (path / "tex-chtml.js").is_file() else None


@pytest.fixture(scope="module")
def browser():
    binary = sitecheck.find_chromium()
    if binary is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium); `make check-site` installs it")
    if _mathjax_dir() is None:
        pytest.skip("sphinx-mathjax-offline is not installed (pip install 'lib[book]')")
    return binary


def test_browser_renders_the_math_offline_and_takes_screenshots(browser, tmp_path):
    site = make_site(tmp_path, mathjax=_mathjax_dir())
    report = sitecheck.check_site(site, install=False, screenshots=tmp_path / "shots")
    assert report.ok, report.text()
    assert report.counts["math_pages"] == 1 and report.counts["equations"] == 2
    names = sorted(p.name for p in report.screenshots)
    assert names == ["chapter-a.png", "landing.png"]
    with Image.open(tmp_path / "shots" / "chapter-a.png") as img:
        assert img.size == sitecheck.WINDOW


def test_browser_reports_math_that_mathjax_did_not_typeset(browser, tmp_path):
    site = make_site(tmp_path, mathjax=_mathjax_dir())
    page = site / "book" / "chapters" / "a.html"
    # the script points at a MathJax that is not there (as when a CDN cannot be reached)
    page.write_text(MATH_PAGE.replace("../../_static/mathjax/tex-chtml.js", "../../_static/nomathjax/tex-chtml.js"))
    report = sitecheck.check_site(site, install=False, screenshots=None)
    text = "\n".join(report.problems.get("book/chapters/a.html", []))
    assert "resource ../../_static/nomathjax/tex-chtml.js: file not found" in text
    assert "2 equation(s) not typeset" in text and "raw TeX left" in text
