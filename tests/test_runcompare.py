"""Two builds' claims side by side (advbook.book.runcompare) and their section of the Reproducibility page."""

from __future__ import annotations

import json

import pytest

from advbook.book import report, runcompare


def _claim(key, estimate, ci, verdict, sesoi=0.05):
    return {"key": key, "claim": f"claim {key}", "statistic": "mean gap", "direction": 1, "sesoi": sesoi,
            "estimate": estimate, "ci": ci, "n": 3, "verdict": verdict}


def _results(chapter, claims, arithmetic):
    return {"chapter": chapter, "profile": "quick", "claims": claims,
            "provenance": {"git_sha": "abc123def4567", "started": "2026-12-03T17:00:00+0000",
                           "training_precision": arithmetic}}


def test_claims_are_compared_only_where_graded_the_same_way():
    base = _results("00_x", [_claim("a", 0.10, [0.05, 0.15], "reproduced"), _claim("b", 0.0, [-0.1, 0.1], "inconclusive"),
                             _claim("c", 0.2, [0.1, 0.3], "reproduced"), _claim("d", 0.1, [None, None], "not reproduced")],
                    "fp32")
    other = _results("00_x", [_claim("a", 0.12, [0.06, 0.18], "reproduced"), _claim("b", 0.3, [0.2, 0.4], "reproduced"),
                              _claim("c", 0.2, [0.1, 0.3], "reproduced", sesoi=0.1), _claim("d", 0.1, [0.0, 0.2], "not reproduced")],
                     "bf16")
    rows = {r["key"]: r for r in runcompare.compare_claims(base, other)}
    assert set(rows) == {"a", "b", "d"}  # c changed its SESOI: not the same claim
    assert rows["a"]["other_inside_base"] and rows["a"]["same_verdict"]
    assert rows["b"]["other_inside_base"] is False and rows["b"]["base_inside_other"] is False
    assert not rows["b"]["same_verdict"]
    assert rows["d"]["other_inside_base"] is None and rows["d"]["base_inside_other"]  # no base interval


def test_folders_record_markdown_and_page_section(tmp_path):
    a, b = tmp_path / "fp32", tmp_path / "bf16"
    a.mkdir(), b.mkdir()
    (a / "00_x.json").write_text(json.dumps(_results("00_x", [_claim("a", 0.1, [0.05, 0.15], "reproduced")], "fp32")))
    (b / "00_x.json").write_text(json.dumps(_results("00_x", [_claim("a", 0.3, [0.2, 0.4], "reproduced")], "bf16")))
    (a / "00_x.long.json").write_text("{}")  # a side run is not a build's page result
    (a / "01_y.json").write_text(json.dumps(_results("01_y", [], "fp32")))  # only in one folder
    out = tmp_path / "book" / "measurements" / "precision.json"
    runcompare._main([str(a), str(b), "--label-base", "fp32", "--label-other", "bf16", "-o", str(out)])
    record = json.loads(out.read_text())
    assert list(record["chapters"]) == ["00_x"]
    assert record["chapters"]["00_x"]["bf16"]["training_precision"] == "bf16"
    assert record["summary"] == {"claims": 1, "other_inside_base": 0, "with_interval": 1, "same_verdict": 1}
    section = "\n".join(report.arithmetic_section(tmp_path))
    assert "## Training in bf16 against fp32" in section and "0 of 1 claims" in section
    assert "| **no** | yes |" in section and "`abc123def4`" in section
    assert report.arithmetic_section(tmp_path / "elsewhere") == []
    with pytest.raises(SystemExit):  # nothing in common: a clear error, no empty record
        runcompare._main([str(a), str(tmp_path / "book")])


def test_the_seed_yardstick_sits_beside_the_precision_comparison(tmp_path):
    a, b, c = tmp_path / "fp32", tmp_path / "bf16", tmp_path / "seed100"
    for folder, estimate, verdict in ((a, 0.1, "reproduced"), (b, 0.12, "reproduced"), (c, 0.3, "inconclusive")):
        folder.mkdir()
        (folder / "00_x.json").write_text(json.dumps(_results("00_x", [_claim("a", estimate, [estimate - 0.05,
                                                                                              estimate + 0.05], verdict)], "fp32")))
    runcompare._main([str(a), str(b), "--label-base", "fp32", "--label-other", "bf16",
                      "-o", str(tmp_path / runcompare.RECORD)])
    assert "a change of seed alone" not in "\n".join(report.arithmetic_section(tmp_path))  # no yardstick: none shown
    runcompare._main([str(a), str(c), "--label-base", "seeds 0-2", "--label-other", "seeds 100-102",
                      "-o", str(tmp_path / runcompare.SEED_RECORD)])
    section = "\n".join(report.arithmetic_section(tmp_path))
    assert "a change of seed alone: two fp32 quick builds of chapters 00 whose" in section
    assert "0 of 1 estimates of the seeds 100-102 build" in section
    assert "\n- 00_x: claim a: reproduced -> inconclusive\n" in section
    assert "Over the same chapters, the bf16 build against the fp32 one: 1 of 1 inside, 1 of 1 the same" in section
    assert section.index("a change of seed alone") < section.index("| Chapter | Claim |")  # before the bf16 table
