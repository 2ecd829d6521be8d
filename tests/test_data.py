"""Named data (data=json, csv, npz): what reaches a model function, and what is refused."""
import json

import numpy as np
import pytest

from runner.data import csv_file, json_file, npz_file
from runner.errors import ConfigError


def test_posteriordb_json_as_it_is(tmp_path):
    """eight_schools.json of posteriordb: J an int (a plate size), y and sigma integer arrays."""
    path = tmp_path / "es.json"
    path.write_text(json.dumps({"J": 8, "y": [28, 8, -3, 7, -1, 1, 18, 12], "sigma": [15, 10, 16, 11, 9, 11, 10, 18],
                                "rate": 0.5}))
    d = json_file(str(path))
    assert d["J"] == 8 and type(d["J"]) is int and d["rate"] == 0.5 and type(d["rate"]) is float
    assert d["y"].dtype == np.int32 and d["y"].tolist() == [28, 8, -3, 7, -1, 1, 18, 12]
    assert d["sigma"].shape == (8,)


def test_csv_header_names_columns_and_keeps_integers(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("\ufeffx,y,group\n0.5,1.25,0\n1.5,2.5,1\n".encode("utf-8"))  # Excel's byte-order mark
    d = csv_file(str(path))
    assert list(d) == ["x", "y", "group"]
    assert d["x"].dtype == np.float32 and d["x"].tolist() == [0.5, 1.5]
    assert d["group"].dtype == np.int32 and d["group"].tolist() == [0, 1]


def test_npz_named_arrays(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((3, 2)), N=np.array(3), idx=np.arange(3))
    d = npz_file(str(tmp_path / "d.npz"))
    assert d["X"].dtype == np.float32 and d["X"].shape == (3, 2)
    assert d["N"] == 3 and type(d["N"]) is int and d["idx"].dtype == np.int32


@pytest.mark.parametrize("content, message", [
    ("x,y\n1,2,3\n", "line 2 has 3 fields"),
    ("x,x\n1,2\n", "repeated column names"),
    ("x,y\n1,abc\n", "column 'y' is not numeric"),
    ("x\n", "header row and at least one data row"),
    ("x,y\n1,nan\n", "NaN or inf"),
])
def test_bad_csv_is_one_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        csv_file(str(path))


@pytest.mark.parametrize("obj, message", [
    ([1, 2, 3], "must hold a JSON object"),
    ({"bad name": [1]}, "not a valid argument name"),
    ({"x": ["a", "b"]}, "not numeric"),
    ({"x": [[1, 2], [3]]}, "not an array of numbers"),
    ({}, "has no arrays"),
])
def test_bad_json_is_one_line(tmp_path, obj, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ConfigError, match=message):
        json_file(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="data file not found"):
        json_file(str(tmp_path / "nope.json"))
