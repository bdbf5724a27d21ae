"""The silhouette custseg computes with matrix products is scikit-learn's, on any table."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from custseg.evaluation import metrics as custseg_metrics
from custseg.evaluation.metrics import internal_metrics, silhouette


@st.composite
def _tables(draw):
    n = draw(st.integers(3, 120))
    d = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    if draw(st.booleans()):  # repeated rows: distances of exactly 0 between different customers
        X[rng.integers(0, n, n // 3)] = X[0]
    k = draw(st.integers(2, n - 1))
    labels = rng.integers(0, k, n)
    labels[:2] = [0, 1]  # at least two clusters; some clusters may hold a single customer
    return X, labels


@settings(max_examples=120, deadline=None)
@given(_tables())
def test_silhouette_is_scikit_learns(table):
    X, labels = table
    if len(np.unique(labels)) >= len(X):
        labels[-1] = labels[0]
    assert silhouette(X, labels) == pytest.approx(skm.silhouette_score(X, labels), abs=1e-9)


@pytest.mark.parametrize("block_cells", [1, 7, 10_000_000])
def test_silhouette_does_not_depend_on_its_blocks(monkeypatch, block_cells):
    rng = np.random.default_rng(1)
    X, labels = rng.normal(size=(300, 4)), rng.integers(0, 5, 300)
    expected = skm.silhouette_score(X, labels)
    monkeypatch.setattr(custseg_metrics, "_SILHOUETTE_BLOCK_CELLS", block_cells)
    assert silhouette(X, labels) == pytest.approx(expected, abs=1e-12)


def test_sampled_silhouette_uses_scikit_learns_sample():
    rng = np.random.default_rng(2)
    X, labels = rng.normal(size=(2000, 3)), rng.integers(0, 6, 2000)
    X[labels == 2] += 3
    for seed in (0, 5):
        got = internal_metrics(X, labels, sample_size=300, random_state=seed)["silhouette"]
        assert got == pytest.approx(skm.silhouette_score(X, labels, sample_size=300, random_state=seed), abs=1e-12)


def test_silhouette_refuses_what_scikit_learn_refuses():
    X = np.arange(12.0).reshape(6, 2)
    for bad in (np.nan, np.inf):
        Y = X.copy()
        Y[2, 1] = bad
        with pytest.raises(ValueError, match="NaN|infinity"):
            silhouette(Y, np.array([0, 0, 0, 1, 1, 1]))
    for labels in (np.zeros(6, int), np.arange(6)):
        with pytest.raises(ValueError, match="Number of labels is"):
            silhouette(X, labels)
        with pytest.raises(ValueError, match="Number of labels is"):
            skm.silhouette_score(X, labels)
