"""seed003's ImageNet path (§11) on a tiny generated image folder: torchvision's ResNet-50 from a local weights file
(random, written here; nothing is downloaded) through indices -> validate -> essential, the original's squash
resize beside Resize(256) + CenterCrop(224), and finetune on streamed folders refused in one line."""
import numpy as np
import pytest
import torch
from PIL import Image

import decompose
from pipeline.contract import done_record, load
from utils.cli import run_main
from utils.io import save_torch
from utils.rundir import RunDir
from utils.taps import LayerTaps

CLASSES, PER_CLASS = 3, 2
MODEL = "torchvision:resnet50"


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory):
    """(workdir, the run's flags): a 3-class image folder (train/ and val/, 2 images per class, 80x64 so that the
    two transforms differ) and random ResNet-50 weights with a 3-way head."""
    import torchvision

    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(CLASSES):
            (root / split / f"n0{c}").mkdir(parents=True)
            for i in range(PER_CLASS):
                pixels = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
                pixels[..., c] = 255   # a class colour: one channel saturated
                Image.fromarray(pixels).save(root / split / f"n0{c}" / f"{i}.png")
    torch.manual_seed(0)
    weights = save_torch(root / "resnet50.pth", torchvision.models.resnet50(num_classes=CLASSES).state_dict())
    workdir = tmp_path_factory.mktemp("runs")
    flags = ["--model-name", MODEL, "--traindata", f"imagefolder:{root}", "--workdir", str(workdir), "--device", "cpu",
             "--weights", str(weights), "-k", "5"]
    return workdir, flags


def test_resnet50_indices_validate_essential_on_an_image_folder(imagenet_like):
    workdir, flags = imagenet_like
    for command in ("indices", "validate", "essential"):
        assert decompose.main([command, *flags, "--val-transform", "squash"]) == 0
    run = RunDir.from_args(decompose.parse_args(["indices", *flags]))
    sets = load(run, "decompose-indices", "indices")["5"]
    assert sorted(sets) == ["0", "1", "2"] and all(len(s) == 5 and max(s) < 2048 for s in sets.values())
    layers = load(run, "decompose-indices", "selectivity")
    assert len(layers["names"]) == 50 and layers["widths"][-1] == 2048   # conv1, 48 block convs, fc
    squashed = load(run, "decompose-validate", "validate")
    assert max(squashed["max_form_gap"].values()) < 1e-4
    essential = load(run, "decompose-essential", "essential")["5"]
    assert essential["n"] == [PER_CLASS] * CLASSES
    assert done_record(run, "decompose-validate")["flags"]["val_transform"] == "squash"

    # Resize(256) + CenterCrop(224) sees other pixels of the 80x64 images: other features, same decomposition
    _, squashed_logits, _ = decompose.gap_features(*_test_split(flags, "squash"))
    _, cropped_logits, _ = decompose.gap_features(*_test_split(flags, "crop"))
    assert not torch.allclose(squashed_logits, cropped_logits)
    assert decompose.main(["validate", *flags]) == 0 and done_record(run, "decompose-validate")["flags"][
        "val_transform"] == "crop"


def _test_split(flags, transform):
    args = decompose.parse_args(["validate", *flags, "--val-transform", transform])
    loaded = decompose.open_network(args, torch.device("cpu"))
    return loaded, decompose.classifier_of(loaded), decompose.split_of(args, loaded, "test")


def test_gap_features_stay_on_the_device_until_the_set_is_done(imagenet_like, monkeypatch):
    """Issue 27: one copy to the host per returned tensor, not per batch; the numbers of one pass over the set."""
    loaded, head, data = _test_split(imagenet_like[1], "crop")
    images, labels = data.take(torch.arange(len(data)))
    with torch.no_grad(), LayerTaps([head]) as taps:
        logits = loaded.model(loaded.inputs(images))
    copies, cpu = [], torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: copies.append(self.shape) or cpu(self, *a, **k))
    monkeypatch.setattr(decompose, "BATCH", 2)   # 3 batches
    features, found_logits, found_labels = decompose.gap_features(loaded, head, data)
    assert copies == [(CLASSES * PER_CLASS, 2048), (CLASSES * PER_CLASS, CLASSES), (CLASSES * PER_CLASS,)]
    torch.testing.assert_close(features, taps.values[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(found_logits, logits, rtol=1e-5, atol=1e-6)
    assert torch.equal(found_labels, labels) and features.device.type == "cpu"


def test_finetune_on_streamed_folders_is_refused_in_one_line(imagenet_like, capsys):
    _, flags = imagenet_like
    with pytest.raises(SystemExit) as exit_info:
        run_main(decompose.main, ["finetune", *flags, "--indices", _sets_file(imagenet_like[0])])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "streamed from image folders" in err


def _sets_file(folder):
    path = folder / "sets.json"
    path.write_text('{"0": [0, 1], "1": [2, 3], "2": [4, 5]}')
    return str(path)
