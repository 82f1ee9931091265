"""advbook.book.sitecheck on a tiny generated site: links, anchors, images, MathJax output, exit codes.

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

from advbook.book import sitecheck

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


# --------------------------------------------------------------------------- content rules

CLAIMS_HEAD = ("<thead><tr><th>Claim</th><th>Paper</th><th>Estimate [95% CI]</th><th>Verdict</th></tr></thead>")


def _claims_table(*rows: str) -> str:
    return f'<table class="table">{CLAIMS_HEAD}<tbody>' + "".join(rows) + "</tbody></table>"


def _row(*cells: str) -> str:
    return "<tr>" + "".join(f"<td><p>{c}</p></td>" for c in cells) + "</tr>"


def _page(body: str) -> str:
    return f"<!DOCTYPE html><html><head><title>Ch</title><script>var x = '/home/ci/x';</script></head><body>{body}</body></html>"


GOOD_ROWS = (_row("A beats B", "&quot;A beats B&quot; (abstract)", "0.12 [0.05, 0.19]",
                  '<span class="sd-badge">reproduced</span>'),
             _row("C holds", "our reading", "0.01 [-0.02, 0.04]", "<strong>not reproduced</strong>; untested at a larger scale"))


def test_a_clean_claims_table_and_clean_text_pass():
    page = sitecheck.parse(_page(
        "<h1>Ch</h1><p>Robust accuracy 0.918, 45.7% and 1/255 = 0.00392 (formatted); see <code>book/results/</code>.</p>"
        + _claims_table(*GOOD_ROWS)
        # a code cell's input may hold anything a program needs; only what it shows is checked
        + '<div class="cell docutils container"><div class="cell_input docutils container"><div class="highlight-ipython3">'
          "<pre>x = np.array([1, 2]); t = torch.tensor([0.5]); path = '/work/main/book'; print(0.1 + 0.2)</pre></div></div>"
          '<div class="cell_output docutils container"><div class="output stream highlight-myst-ansi"><pre>accuracy 0.97</pre>'
          "</div></div></div>"
        # a literal block or a literalinclude in the prose is code too
        + '<div class="highlight-bash notranslate"><div class="highlight"><pre>ADVBOOK_CACHE=/tmp/cache advbook run 05</pre>'
          "</div></div>"
        # an example command an author typed in inline code is not a stray path
        + '<p>Use a separate cache (<code class="docutils literal"><span class="pre">ADVBOOK_CACHE=/tmp/beta3</span></code>).</p>'
        # a table without a verdict column is not a claims table
        + "<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td></tr></tbody></table>"))
    assert sitecheck.check_content(page) == []


def test_each_claims_table_failure_is_reported_with_the_row():
    broken = _row("CE and iCE reach the same accuracy", "paper", "0.01")  # a cell short (raw HTML table)
    empty = _row("D holds", "paper", "0.3 [0.1, 0.5]", " ")
    split = _row("AT is an l1 penalty", "`", "w", ", per statistic)")  # a '|' split the row: no verdict left
    findings = sitecheck.check_claims_tables(sitecheck.parse(_page(_claims_table(GOOD_ROWS[0], broken, empty, split))))
    assert len(findings) == 3, findings
    assert findings[0].startswith("claims table:") and "row 2 ('CE and iCE reach the same accuracy') has 3 cells, its header 4" \
        in findings[0]
    assert "row 3 ('D holds'): empty cell under 'Verdict'" in findings[1]
    assert "row 4 ('AT is an l1 penalty'): no verdict word under 'Verdict' (it reads ', per statistic)')" in findings[2]
    # colspan counts as the cells it spans
    spanned = '<tr><td colspan="3">A beats B, spanning</td><td>reproduced</td></tr>'
    assert sitecheck.check_claims_tables(sitecheck.parse(_page(_claims_table(spanned)))) == []


def test_an_unescaped_pipe_in_a_markdown_claims_row_fails_the_check():
    """The failure the issue found, end to end: MyST's Markdown parser (markdown-it) splits a row at a '|' inside a
    code span and drops the cells past the header's, so the verdict is pushed out of its column."""
    markdown_it = pytest.importorskip("markdown_it")
    md = markdown_it.MarkdownIt("commonmark").enable("table")
    head = "| Claim | Rule | Verdict |\n|---|---|---|\n"
    good = md.render(head + "| CE and iCE match | `abs(CE - iCE) <= 0.01` | **reproduced** |\n")
    escaped = md.render(head + "| CE and iCE match | `\\|CE - iCE\\| <= 0.01` | **reproduced** |\n")
    broken = md.render(head + "| CE and iCE match | `|CE - iCE| <= 0.01` | **reproduced** |\n")
    assert sitecheck.check_claims_tables(sitecheck.parse(good)) == []
    assert sitecheck.check_claims_tables(sitecheck.parse(escaped)) == []
    findings = sitecheck.check_claims_tables(sitecheck.parse(broken))
    assert len(findings) == 1 and "no verdict word under 'Verdict'" in findings[0]


@pytest.mark.parametrize("shown, expected", [
    ('<div class="cell_output"><div class="output stream highlight-myst-ansi"><pre>results written to '
     "/work/main/book/results/01_excessive_invariance.json</pre></div></div>",
     "stray path: '/work/main/book/results/01_excessive_invariance.json'"),
    ("<p>The cache lives in /home/alice/advbook/.cache on this machine.</p>", "stray path: '/home/alice/advbook/.cache'"),
    ("<p>Saved to /tmp/pytest-of-root/run1/x.png.</p>", "stray path: '/tmp/pytest-of-root/run1/x.png' in"),
    (r"<p>Saved to C:\Users\alice\book\x.json</p>", "stray path: 'C:"),
    ("<div class='cell_output'><pre>TensorData('mnist5k', train=(4000, 1, 28, 28))</pre></div>", "raw repr: TensorData("),
    ("<p>&lt;advbook.data.Split object at 0x7f3a2b1c9d90&gt;</p>", "raw repr: <... object at 0x...>"),
    ("<div class='cell_output'><pre>tensor([0.1000, 0.2000])</pre></div>", "raw repr: tensor(...)"),
    ("<div class='cell_output'><pre>array([1, 2, 3])</pre></div>", "raw repr: array([...])"),
    ("<p>{'max_pgd_minus_closed': -0.05355435609817505}</p>", "raw repr: 1 float(s) printed with 13 or more"),
    ("<td>4.76837158203125e-07</td>", "raw repr: 1 float(s) printed with 13 or more"),
])
def test_stray_paths_and_reprs_are_reported(shown, expected):
    findings = sitecheck.check_content(sitecheck.parse(_page(shown)))
    assert len(findings) == 1 and findings[0].startswith(expected), findings


def test_the_books_own_root_is_a_stray_path_everywhere(tmp_path):
    site = tmp_path / "srv" / "advbook" / "_build" / "html"
    roots = sitecheck.machine_paths(site)
    assert roots == (str(tmp_path / "srv" / "advbook"),)
    inline = _page(f'<p>Run <code class="docutils literal">{roots[0]}/notebooks</code> again.</p>')
    findings = sitecheck.check_content(sitecheck.parse(inline), roots)
    assert len(findings) == 1 and f"'{roots[0]}/notebooks'" in findings[0]
    assert sitecheck.machine_paths(Path("/srv/_build/html")) == ()  # too shallow to be specific


def test_warning_rules_are_listed_without_failing_and_strict_fails_them(tmp_path, capsys, monkeypatch):
    site = make_site(tmp_path)
    page = site / "book" / "chapters" / "a.html"
    page.write_text(MATH_PAGE.replace("<section id=\"sec-1\">", "<section id=\"sec-1\"><div class='cell_output'><pre>"
                                      "TensorData('mnist5k') saved to /home/ci/book/results/a.json</pre></div>"))
    monkeypatch.setattr(sitecheck, "WARN_ONLY", {"stray path", "raw repr"})
    report = static_report(site)
    assert report.ok and report.problems == {}
    assert [w.split(":")[0] for w in report.warnings["book/chapters/a.html"]] == ["stray path", "raw repr"]
    text = report.text()
    assert "WARNING (not a failure; rules raw repr, stray path): 2 finding(s) on 1 page(s)" in text
    assert "book/chapters/a.html\n  ~ stray path: '/home/ci/book/results/a.json'" in text and "OK: no problems" in text
    strict = sitecheck.Report(site)
    sitecheck.check_static(site, strict, strict=True)
    assert not strict.ok and len(strict.problems["book/chapters/a.html"]) == 2
    assert sitecheck.main([str(site), "--no-browser"]) == 0
    assert sitecheck.main([str(site), "--no-browser", "--strict"]) == 1
    capsys.readouterr()
    # a rule that is not warning-only fails the check
    monkeypatch.setattr(sitecheck, "WARN_ONLY", set())
    assert sitecheck.main([str(site), "--no-browser"]) == 1
    assert "FAILED: 2 problem(s) on 1 page(s)" in capsys.readouterr().out


def test_claims_rows_are_never_warning_only():
    assert "claims table" not in sitecheck.WARN_ONLY and sitecheck.WARN_ONLY <= set(sitecheck.RULES)


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
    assert names == ["chapter-a-phone.png", "chapter-a.png", "landing-phone.png", "landing.png"]
    with Image.open(tmp_path / "shots" / "chapter-a.png") as img:
        assert img.size == sitecheck.WINDOW
    with Image.open(tmp_path / "shots" / "landing-phone.png") as img:
        assert img.size == sitecheck.PHONE


def test_browser_reports_math_that_mathjax_did_not_typeset(browser, tmp_path):
    site = make_site(tmp_path, mathjax=_mathjax_dir())
    page = site / "book" / "chapters" / "a.html"
    # the script points at a MathJax that is not there (as when a CDN cannot be reached)
    page.write_text(MATH_PAGE.replace("../../_static/mathjax/tex-chtml.js", "../../_static/nomathjax/tex-chtml.js"))
    report = sitecheck.check_site(site, install=False, screenshots=None)
    text = "\n".join(report.problems.get("book/chapters/a.html", []))
    assert "resource ../../_static/nomathjax/tex-chtml.js: file not found" in text
    assert "2 equation(s) not typeset" in text and "raw TeX left" in text
