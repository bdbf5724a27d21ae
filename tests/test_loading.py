"""read_table: delimiters, encodings, quoting, Parquet, missing-value tokens, numbers stored as text."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from custseg.exceptions import DataError
from custseg.io.reading import read_table
from conftest import SHIPPED_TEST  # noqa: E402

ROWS = [["1001", "Female", "34", "Gold tier", "52.5"],
        ["1002", "Male", "", "Silver, legacy", "61.0"],
        ["1003", "Female", "58", 'He said "hi"', ""]]
HEADER = ["CustomerID", "Gender", "Age", "Tier", "Income"]


def _write(path, delimiter: str, bom: bool = False, newline: str = "\n") -> None:
    def quote(v: str) -> str:
        if any(ch in v for ch in (delimiter, '"', "\n")):
            return '"' + v.replace('"', '""') + '"'
        return v
    lines = [delimiter.join(quote(v) for v in row) for row in [HEADER, *ROWS]]
    data = (newline.join(lines) + newline).encode("utf-8")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
@pytest.mark.parametrize("bom", [False, True], ids=["utf8", "utf8-bom"])
def test_delimiter_is_detected_with_or_without_bom(tmp_path, delimiter, bom):
    path = tmp_path / "customers.txt"
    _write(path, delimiter, bom=bom)
    table = read_table(path)
    assert table.delimiter == delimiter
    assert list(table.frame.columns) == HEADER  # no BOM glued to the first name
    assert table.frame["Tier"].tolist() == ["Gold tier", "Silver, legacy", 'He said "hi"']
    assert table.frame["Age"].dtype == "float64" and np.isnan(table.frame["Age"][1])
    assert table.frame["CustomerID"].tolist() == [1001.0, 1002.0, 1003.0]
    assert "CustomerID" in table.integer_columns and "Income" not in table.integer_columns
    assert table.line_numbers.tolist() == [2, 3, 4]


def test_windows_line_endings_and_excel_sep_line(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"sep=;\r\nID;Score\r\n1;2,5\r\n2;3,75\r\n")
    table = read_table(path)
    assert table.delimiter == ";"
    assert table.frame["Score"].tolist() == [2.5, 3.75]  # decimal commas of a ';' file
    assert table.numeric_from_text == {"Score": "decimal commas read as decimal points"}
    assert table.line_numbers.tolist() == [3, 4]


def test_gzip_utf16_and_trailing_delimiters_are_read(tmp_path):
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(b"ID,Age\n1,30\n2,40\n"))
    (tmp_path / "b.txt").write_bytes("ID\tAge\n1\t30\n2\t40\n".encode("utf-16"))
    (tmp_path / "c.csv").write_text("ID,Age,\n1,30,\n2,40,\n")
    for name in ("a.csv.gz", "b.txt", "c.csv"):
        frame = read_table(tmp_path / name).frame
        assert list(frame.columns) == ["ID", "Age"], name
        assert frame["Age"].tolist() == [30.0, 40.0], name


def test_missing_value_tokens(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("ID,Job,Age\n1,unknown,30\n2,NA,unknown\n3,Doctor,N/A\n4,null,41\n")
    default = read_table(path)
    assert default.frame["Job"].tolist()[0] == "unknown"
    assert default.frame["Job"].isna().tolist() == [False, True, False, True]
    assert default.frame["Age"].dtype == object  # 'unknown' is text until declared missing
    asked = read_table(path, na_values=["unknown"])
    assert asked.frame["Job"].isna().tolist() == [True, True, False, True]
    assert asked.frame["Age"].tolist()[0] == 30.0 and asked.frame["Age"].isna().sum() == 2


def test_nan_strings_are_missing_and_inf_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("ID,Income\n1,NaN\n2,52.5\n3,nan\n")
    assert read_table(path).frame["Income"].isna().tolist() == [True, False, True]
    path.write_text("ID,Income\n1,5\n2,-inf\n")
    with pytest.raises(DataError, match=r"line 3, column 'Income': value '-inf' is not a finite number"):
        read_table(path)


def test_quoted_blank_cells_in_a_numeric_column_are_missing_and_noted(tmp_path):
    path = tmp_path / "telco.csv"
    path.write_text('customerID,TotalCharges\n"7590-VHVEG","29.85"\n"5575-GNVDE"," "\n"3668-QPYBK","108.15"\n')
    table = read_table(path)
    assert table.frame["TotalCharges"].dtype == "float64"
    assert table.frame["TotalCharges"].isna().tolist() == [False, True, False]
    assert table.numeric_from_text == {"TotalCharges": "stored as text; blank cells read as missing"}


def test_parquet_string_columns_of_numbers_are_numeric_and_noted(tmp_path):
    frame = pd.DataFrame({
        "customerID": ["A-1", "B-2", "C-3"],
        "TotalCharges": ["29.85", " ", "108.15"],
        "Monthly": ["1.5", "2.5", "3.5"],
        "Senior": [True, False, None],
        "Tenure": pd.array([1, None, 3], dtype="Int64"),
        "Since": pd.to_datetime(["2020-01-01", "2021-06-30", None]),
    })
    path = tmp_path / "telco.parquet"
    frame.to_parquet(path)
    table = read_table(path)
    assert table.delimiter is None
    assert table.frame["TotalCharges"].isna().tolist() == [False, True, False]
    assert table.numeric_from_text == {
        "TotalCharges": "stored as text in the file; blank cells read as missing",
        "Monthly": "stored as text in the file",
    }
    assert table.frame["Senior"].tolist()[:2] == ["True", "False"] and pd.isna(table.frame["Senior"][2])
    assert table.frame["Tenure"].tolist()[0] == 1.0 and "Tenure" in table.integer_columns
    assert table.frame["Since"].tolist()[0] == "2020-01-01 00:00:00"


def test_a_parquet_file_is_recognised_whatever_its_name(tmp_path):
    path = tmp_path / "export.csv"
    pd.DataFrame({"ID": [1, 2], "Age": [30.5, 40.5]}).to_parquet(path)
    assert read_table(path).frame["Age"].tolist() == [30.5, 40.5]


def test_a_quoted_value_may_span_lines(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('ID,Address,Age\n1,"12 Main St\nFlat 3",30\n2,"Elm Rd",40\n')
    table = read_table(path)
    assert table.frame["Address"][0] == "12 Main St\nFlat 3"
    assert table.line_numbers.tolist() == [2, 4]  # each row's first line


def test_one_column_table(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("Age\n30\n40\n")
    table = read_table(path)
    assert list(table.frame.columns) == ["Age"] and table.frame["Age"].tolist() == [30.0, 40.0]


def test_codes_made_of_digits_keep_every_digit(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("AccountNo,Zip,Age\n123456789012345678,02134,30\n123456789012345679,10001,40\n")
    frame = read_table(path).frame
    assert frame["AccountNo"].tolist() == ["123456789012345678", "123456789012345679"]  # not rounded by float64
    assert frame["Zip"].tolist() == ["02134", "10001"]  # zero padding kept
    assert frame["Age"].dtype == "float64"


# -- small tables take Python loops, big ones pandas: the same answers -----------------------------------------
def test_is_in_gives_pandas_isin_on_both_sides_of_its_threshold():
    from custseg.io.reading import _SMALL, is_in

    pool = np.array(["a", " a", None, np.nan, 1, 1.0, True, "1", "", "NA"], dtype=object)
    members = {"a", 1, "", "NA"}
    for n in (1, len(pool), _SMALL - 1, _SMALL, 3 * _SMALL):
        values = np.resize(pool, n)
        expected = pd.Series(values, dtype=object).isin(members).to_numpy()
        assert np.array_equal(is_in(values, members), expected), n
        assert np.array_equal(is_in(pd.Series(values, dtype=object), list(members)), expected), n


@pytest.mark.parametrize("keep_categories", [False, True])
def test_one_record_is_typed_as_it_is_in_a_big_table(keep_categories):
    """A request of one customer and a table of hundreds take different paths through the reader
    (membership tests, code tests): each row must come out the same either way."""
    from custseg.io.reading import table_from_frame

    frame = pd.read_csv(SHIPPED_TEST).head(700)
    frame["Code"] = [f"{i % 90 + 10:04d}" for i in range(len(frame))]  # zero-padded codes: kept as text
    frame.loc[3, "Gender"] = "  Female "  # stripped
    frame.loc[5, "Profession"] = "NA"  # a missing-value token
    text = ["Gender", "Ever_Married", "Graduated", "Profession", "Spending_Score", "Var_1"] if keep_categories else ()
    whole = table_from_frame(frame, "t", text_columns=text)
    assert whole.frame["Code"].iloc[0] == "0010" and whole.frame["Gender"].iloc[3] == "Female"
    assert pd.isna(whole.frame.loc[5, "Profession"])
    for row in (0, 3, 5, 699):
        one = table_from_frame(frame.iloc[[row]].reset_index(drop=True), "t", text_columns=text)
        assert list(one.frame.columns) == list(whole.frame.columns)
        for name in whole.frame.columns:
            a, b = one.frame[name].iloc[0], whole.frame[name].iloc[row]
            assert (pd.isna(a) and pd.isna(b)) or a == b, (row, name, a, b)
            assert one.frame[name].dtype == whole.frame[name].dtype, (row, name)
    # text stays Python objects (pandas would infer its string dtype from object arrays)
    assert whole.frame["Gender"].dtype == object and whole.frame["Code"].dtype == object


def test_a_frame_without_columns_keeps_its_rows():
    from custseg.io.reading import table_from_frame

    table = table_from_frame(pd.DataFrame(index=range(3)), "t")
    assert table.frame.shape == (3, 0) and list(table.line_numbers) == [2, 3, 4]
