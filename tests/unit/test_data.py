"""runner/data.py: the named loaders (data=json, csv, npz: what reaches a model function, and what
is refused) and the MNIST IDX loader."""
import json
import re

import numpy as np
import pytest
from conftest import write_idx

import runner
from runner import data
from runner.data import csv_file, json_file, mnist, npz_file
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


def takes_x_y(x, y=None):
    """A model function of x and y (never run here: binding the data is what is tested)."""


def bind(data):
    from runner.models.function import FunctionModel

    model = FunctionModel(takes_x_y)
    model._discrete_sites = lambda data, observed=(): (False, False)  # no trace: the function has no sites
    return model.bind(data)


@pytest.mark.parametrize("content, message", [
    ("x,y\n1,2,3\n", "line 2 has 3 fields"),
    ("x,x\n1,2\n", "repeated column names"),
    ("x\n", "header row and at least one data row"),
])
def test_bad_csv_is_one_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        csv_file(str(path))


@pytest.mark.parametrize("content, message", [
    ("x,y\n1,abc\n", "column 'y' is not numeric"),
    ("x,y\n1,nan\n", "NaN or inf"),
    ("x,y\n1,2\n3,\n", "column 'y' has a missing value at line 3"),
])
def test_bad_column_refused_only_when_the_model_takes_it(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        bind(csv_file(str(path)))
    path.write_text(content.replace("x,y", "x,name"))  # the same column under a name the model does not take
    assert list(bind(csv_file(str(path)))) == ["x"]


@pytest.mark.parametrize("obj, message", [
    ({"x": [1.0], "y": ["a", "b"]}, "'y' is not numeric"),
    ({"x": [1.0], "y": [[1, 2], [3]]}, "'y' is not an array of numbers"),
    ({"x": [1.0], "y": {"nested": 1}}, "'y' is not"),
])
def test_bad_json_values_refused_only_when_taken(tmp_path, obj, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ConfigError, match=message):
        bind(json_file(str(path)))
    path.write_text(json.dumps({"x": [1.0], "note": obj["y"], "bad key": 1}))  # posteriordb files carry extras
    assert list(bind(json_file(str(path)))) == ["x"]


@pytest.mark.parametrize("obj, message", [
    ([1, 2, 3], "must hold a JSON object"),
    ({}, "has no arrays"),
])
def test_bad_json_is_one_line(tmp_path, obj, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ConfigError, match=message):
        json_file(str(path))


def test_wrong_format_says_which_to_use(tmp_path):
    (tmp_path / "d.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ConfigError, match=r"a \.csv file: use data=csv"):
        json_file(str(tmp_path / "d.csv"))
    with pytest.raises(ConfigError, match=r"a \.csv file: use data=csv"):
        npz_file(str(tmp_path / "d.csv"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="data file not found"):
        json_file(str(tmp_path / "nope.json"))


# --- MNIST IDX loader ----------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [True, False])
def test_idx_loader(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28))
    name = "train-images-idx3-ubyte" + (".gz" if compress else "")
    write_idx(tmp_path / name, images, compress)
    x = mnist(str(tmp_path), n=5)
    assert x.shape == (5, 784) and x.dtype == np.float32
    np.testing.assert_allclose(x, images[:5].reshape(5, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(mnist(str(tmp_path / name), n=None, binarize=0.5),
                                  (images.reshape(7, -1) / 255.0 > 0.5).astype(np.float32))


def test_idx_loader_refuses_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ConfigError, match="not an IDX file"):
        mnist(str(tmp_path / "bad"))
    write_idx(tmp_path / "short", np.zeros((3, 4, 4)), False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-5])
    with pytest.raises(ConfigError, match="truncated"):
        mnist(str(tmp_path / "short"))
    with pytest.raises(ConfigError, match="no MNIST"):
        mnist(str(tmp_path))
    np.savez(tmp_path / "m.npz", x_train=np.full((4, 28, 28), 255, np.uint8))
    assert mnist(str(tmp_path / "m.npz")).shape == (4, 784)


@pytest.mark.parametrize("text,shape", [("1,0,1\n", (1, 3)), ("1,0,1\n0,1,1\n", (2, 3)), ("0\n1\n10\n", (3,)),
                                        ("7\n", (1,))])
def test_text_file_rows_are_data_points(tmp_path, text, shape):
    """One row of several columns is one data point of D values (not D points of one value)."""
    (tmp_path / "x.csv").write_text(text)
    assert data.file(str(tmp_path / "x.csv")).shape == shape


def test_a_single_row_is_refused_by_a_mixture_in_one_line(tmp_path):
    (tmp_path / "one.csv").write_text("1,0,1\n")
    cfg, _ = runner.compose(["model=bmm", "model.K=2", "data=file", f"data.path={tmp_path}/one.csv"])
    with pytest.raises(ConfigError, match=r"model.K=2 is larger than the number of data points \(1\)"):
        runner.build(cfg)


@pytest.mark.parametrize("cell", ["1_0", "٣", "0x10", "½", "1e", "--1", "1 000"])
def test_a_csv_cell_python_would_read_but_no_spreadsheet_writes_is_refused(tmp_path, cell):
    """int('1_0') is 10 and int('٣') is 3 in Python: such a cell used to be read as a number (issue 28)."""
    import runner
    from runner.errors import ConfigError

    (tmp_path / "d.csv").write_text(f"x,y\n1,2\n{cell},3\n", encoding="utf-8")
    (tmp_path / "m.py").write_text("import numpyro, numpyro.distributions as dist\n\n\ndef model(x, y):\n"
                                   "    numpyro.sample('b', dist.Normal(0, 1))\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        cfg, _ = runner.compose(["model=fn", "model.fn=m.model", "data=csv", f"data.path={tmp_path}/d.csv"])
        with pytest.raises(ConfigError, match=re.escape(f"column 'x' is not numeric ({cell!r} at line 3)")):
            runner.build(cfg)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("m", None)
