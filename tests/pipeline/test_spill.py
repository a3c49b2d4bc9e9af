"""pipeline.spill: the Gram data formed from rows on disk equals numpy's X X^T, one layer in memory at a time."""
import numpy as np
import torch

from pipeline.spill import SpilledRows
from utils.io import Deferred, load_npz, save_npz


def test_blockwise_gram_and_features_equal_numpy(tmp_path):
    rng = np.random.default_rng(0)
    layers = [rng.standard_normal((23, 3, 4, 4)).astype(np.float32), rng.standard_normal((23, 5)).astype(np.float32)]
    folder = tmp_path / ".gram_rows_digits"
    # 3 rows of float64 per block at d = 48: uneven blocks (3, 3, ..., 2), so off-diagonal blocks and edges matter
    with SpilledRows(folder, 2, torch.device("cpu"), block_bytes=3 * 8 * 48) as spill:
        for start, stop in ((0, 10), (10, 11), (11, 23)):  # batches of different sizes
            spill.append([torch.from_numpy(layer[start:stop]) for layer in layers])
        save_npz(tmp_path / "grams.npz", **spill.gram_data())
        assert spill.rows == 23 and folder.is_dir()
    assert not folder.exists()
    grams = load_npz(tmp_path / "grams.npz")
    assert sorted(grams) == ["feat_01", "gram_00"]
    X = layers[0].reshape(23, -1).astype(np.float64)
    np.testing.assert_allclose(grams["gram_00"], X @ X.T, rtol=1e-12, atol=1e-10)
    assert np.array_equal(grams["gram_00"], grams["gram_00"].T)
    assert grams["feat_01"].dtype == np.float64 and np.array_equal(grams["feat_01"], layers[1].astype(np.float64))


def test_spilled_rows_keep_float64_features_exact(tmp_path):
    X = torch.randn(6, 7, dtype=torch.float64)
    with SpilledRows(tmp_path / "rows", 1, torch.device("cpu")) as spill:
        spill.append([X])
        assert torch.equal(spill.read(0, 2, 5), X[2:5])


def test_deferred_arrays_are_computed_only_when_written(tmp_path):
    computed = []

    def make(value):
        def compute():
            computed.append(value)
            return torch.full((2,), float(value))
        return Deferred(compute)

    arrays = {"a": make(1), "b": make(2), "c": np.arange(3)}
    assert computed == []                                 # nothing computed before the write
    save_npz(tmp_path / "x.npz", **arrays)
    assert computed == [1, 2]
    loaded = load_npz(tmp_path / "x.npz")
    assert loaded["a"].tolist() == [1.0, 1.0] and loaded["b"].tolist() == [2.0, 2.0]
    assert loaded["c"].tolist() == [0, 1, 2]
