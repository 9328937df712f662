"""Markdown tables (speechllm.metrics.tables): the one writer every report uses."""

import pytest

from speechllm.metrics.tables import markdown_table, table_lines


def test_header_rule_and_rows_in_the_reports_format():
    assert markdown_table(["a", "b"], [[1, 2], ["x", 3.5]]) == "| a | b |\n|---|---|\n| 1 | 2 |\n| x | 3.5 |\n"
    assert table_lines(["a", "b"], [(1, 2)]) == ["| a | b |", "|---|---|", "| 1 | 2 |"]


def test_alignment_codes_per_column():
    assert table_lines(["part", "TFLOP"], [], align="-r")[1] == "|---|---:|"
    assert table_lines(["a", "b", "c", "d"], [], align=["l", "c", "r", ""])[1] == "|:---|:---:|---:|---|"
    with pytest.raises(ValueError, match="2 codes for 3 columns"):
        table_lines(["a", "b", "c"], [], align="rr")
    with pytest.raises(ValueError, match="unknown alignment code 'x'"):
        table_lines(["a"], [], align="x")


def test_no_rows_leaves_header_and_rule():
    assert markdown_table(["method", "WER"], []) == "| method | WER |\n|---|---|\n"
    assert markdown_table(["method"], iter([])) == "| method |\n|---|\n"


def test_pipes_and_line_breaks_inside_a_cell_do_not_split_the_row():
    assert table_lines(["a|b"], [["x | y"], ["one\ntwo"]]) == ["| a\\|b |", "|---|", "| x \\| y |", "| one two |"]


def test_empty_cells_and_rows_of_the_wrong_width():
    assert table_lines(["a", "b"], [["", None]])[2] == "|  | None |"
    with pytest.raises(ValueError, match="row 1 has 1 cells for 2 columns"):
        table_lines(["a", "b"], [[1, 2], [1]])
