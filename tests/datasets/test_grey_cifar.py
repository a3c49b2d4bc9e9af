"""cifar10_grey, the rainbow tutorial's grey CIFAR-10 (seed002 §7), on a generated tiny CIFAR-10 in torchvision's
pickle format: the network input (the dataset's pixels normalised with its own constants, .481 / .239, whatever
the recipe) equals torchvision's ToTensor -> Normalize(ImageNet) -> Grayscale of the same images, and a tutorial
MLP (1024 inputs) trains on it with the seed002_tutorial recipe."""
import pickle

import numpy as np
import pytest
import torch
from torchvision import transforms

import datasets.files as data_files
import train_classifier
from datasets import build_dataset
from datasets.normalization import normalization_for
from pipeline.loaded import LoadedRun
from utils.rundir import RunDir

NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch):
    """Six CIFAR-10 pickles as torchvision's (dict of bytes keys, data (n, 3072) uint8, protocol 2), 8 images each."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in NAMES:
        batch = {b"batch_label": b"tiny", b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, 8).tolist(), b"filenames": [b"x.png"] * 8}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    monkeypatch.setattr(data_files, "CIFAR10_MD5", {name: data_files.md5sum(folder / name) for name in NAMES})
    return tmp_path


def test_grey_cifar_is_normalise_then_grey(tiny_cifar):
    data = build_dataset("cifar10_grey", "test", tiny_cifar)
    assert data.images.shape == (8, 1, 32, 32) and data.num_classes == 10
    assert data.mean == (0.481,) and data.std == (0.239,)
    for recipe in ("seed002_tutorial", "seed002", None):               # ImageNet's constants never apply here
        assert normalization_for("imagenet" if recipe else None, "cifar10_grey") == ((0.481,), (0.239,))
    with open(tiny_cifar / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")[b"data"].reshape(8, 3, 32, 32).transpose(0, 2, 3, 1)
    tutorial = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406),
                                                                               (0.229, 0.224, 0.225)),
                                   transforms.Grayscale()])
    expected = torch.stack([tutorial(image) for image in raw])        # (8, 1, 32, 32), the tutorial's input
    torch.testing.assert_close(data.normalize(data.images), expected, atol=1e-5, rtol=1e-5)
    labels = build_dataset("cifar10", "test", tiny_cifar).labels
    assert torch.equal(data.labels, labels)


def test_the_tutorial_mlp_trains_on_grey_cifar(tiny_cifar, tmp_path):
    argv = ["--model-name", "rainbow_mlp", "--traindata", "cifar10_grey", "--recipe", "seed002_tutorial",
            "--epochs", "1", "--data-root", str(tiny_cifar), "--workdir", str(tmp_path / "runs"), "--device", "cpu",
            "--no-progress"]
    assert train_classifier.main(argv) == 0
    loaded = LoadedRun.open(RunDir.of(tmp_path / "runs", "cifar10_grey", "rainbow_mlp", 0))
    assert loaded.model.fc1.in_features == 1024                        # §7: MLP 1024-512-256-10
    assert loaded.config["data"]["mean"] == [0.481] and loaded.config["data"]["std"] == [0.239]
    test = loaded.dataset("test", str(tiny_cifar))
    torch.testing.assert_close(loaded.inputs(test.images), test.normalize(test.images))
