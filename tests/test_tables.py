"""Tables as a reader sees them (advbook.tables)."""

import numpy as np
import pandas as pd
import pytest

from advbook import tables


@pytest.mark.parametrize("value, text", [
    (0.932, "0.932"), (-0.014167, "-0.0142"), (0.0001234, "0.000123"), (3.30128, "3.3"), (12345.6, "12,346"),
    (1.0, "1"), (0.1 + 0.2, "0.3"), (7, "7"), (12000, "12,000"), (np.int64(3), "3"), (np.float32(0.5), "0.5"),
    (True, "yes"), (np.bool_(False), "no"), (float("nan"), tables.MISSING), (None, tables.MISSING),
    (2e-7, "2.00e-07"), (float("inf"), "∞"), ("PGD-20", "PGD-20"),
])
def test_number_gives_significant_digits_not_six_decimals(value, text):
    assert tables.number(value) == text


def test_styled_hides_a_range_index_keeps_a_named_one_and_formats_every_cell():
    frame = pd.DataFrame({"method": ["noise", "UPI"], "share": [0.1234567, np.nan], "kept": [True, False],
                          "D": [1.0512345, 2.0]})
    html = tables.styled(frame, "A caption", percent_columns=["share"]).to_html()
    assert "12.3%" in html and tables.MISSING in html and "yes" in html and "1.05" in html
    assert "1.0512345" not in html and ">nan<" not in html.lower()
    assert ">0<" not in html and "A caption" in html  # no 0, 1 index column
    named = tables.styled(frame.set_index("method")).to_html()
    assert ">noise<" in named
    assert ">0.3<" in tables.styled(pd.DataFrame({"x": [1]}, index=[0.1 + 0.2]).rename_axis("eps")).to_html()


def test_styled_renders_an_empty_label_in_a_grouped_index():
    frame = pd.DataFrame({"student": ["AT teacher", "soft"], "T": [np.nan, 4.0], "clean": [0.9, 0.81234]})
    grouped = frame.groupby(["student", "T"], sort=False, dropna=False)[["clean"]].mean()
    html = tables.styled(grouped, "students").to_html()
    assert "0.812" in html and tables.MISSING in html


def test_styled_names_what_is_wrong_with_percent_columns():
    with pytest.raises(ValueError, match="not columns of the table; columns: a"):
        tables.styled(pd.DataFrame({"a": [1.0]}), percent_columns=["b"])
