"""import_weights.py (issue 10): a weights file becomes a run directory that every stage reads, on a tiny folder."""
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader

import analyzing
import decompose
import features
import import_weights
import kernels
import stability
from datasets import folders
from datasets.normalization import IMAGENET_MEAN
from models import build_model
from pipeline.contract import done_record, load, stage_path
from pipeline.loaded import load_run_model
from utils.cli import run_main
from utils.rundir import RunDir, safe_name

CLASSES = ("n01", "n02", "n03")
MODEL = "torchvision:resnet18"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """train/ and val/ with 4 generated JPEGs per class (datasets/folders.py layout; crops are 224 anyway)."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def resnet18_state():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=len(CLASSES)).state_dict()


def run_flags(folder, workdir, seed=0, model=MODEL):
    return ["--model-name", model, "--traindata", f"imagefolder:{folder}", "--workdir", str(workdir),
            "--seed", str(seed), "--device", "cpu"]


def imported_run(folder, workdir, seed=0) -> RunDir:
    return RunDir.of(workdir, f"imagefolder:{folder}", MODEL, seed)


def one_line_exit(argv, capsys) -> str:
    """Run import_weights as the command line does; return its error line after checking exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        run_main(import_weights.main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


@pytest.mark.parametrize("prefix", ["", "module."])
def test_state_dict_round_trips(folder, resnet18_state, tmp_path, prefix):
    weights = tmp_path / "resnet18.pth"
    torch.save({prefix + key: value for key, value in resnet18_state.items()}, weights)
    assert import_weights.main([*run_flags(folder, tmp_path), "--weights", str(weights)]) == 0
    run = imported_run(folder, tmp_path)
    model, config, epoch = load_run_model(run)
    assert epoch == 1 and config["model"]["num_classes"] == 3 and config["model"]["image_size"] == 224
    assert config["data"]["mean"] == list(IMAGENET_MEAN) and config["imported"]["weights"] == str(weights)
    assert len(config["imported"]["sha256"]) == 64 and (run.root / "_done.json").is_file()
    for key, value in model.state_dict().items():
        assert torch.equal(value, resnet18_state[key]), key


def test_registered_model_with_akamaster_layout(tmp_path):
    model = build_model("resnet20", num_classes=10)
    weights = tmp_path / "resnet20.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "best_prec1": 91.0}, weights)
    argv = ["--model-name", "resnet20", "--traindata", "digits", "--workdir", str(tmp_path), "--weights", str(weights),
            "--normalization", "imagenet"]
    assert import_weights.main(argv) == 0
    loaded, config, _ = load_run_model(RunDir.of(tmp_path, "digits", "resnet20", 0))
    assert config["data"]["mean"] == list(IMAGENET_MEAN)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_bad_input_is_one_line(folder, resnet18_state, tmp_path, capsys):
    weights = tmp_path / "resnet18.pth"
    torch.save(resnet18_state, weights)
    flags = run_flags(folder, tmp_path)
    assert "no weights file" in one_line_exit([*flags, "--weights", str(tmp_path / "absent.pth")], capsys)
    wrong = one_line_exit([*run_flags(folder, tmp_path, model="torchvision:resnet34"), "--weights", str(weights)],
                          capsys)
    assert "missing: layer1.2." in wrong  # resnet34 has a third block where resnet18 has two
    assert import_weights.main([*flags, "--weights", str(weights)]) == 0
    assert "--force" in one_line_exit([*flags, "--weights", str(weights)], capsys)
    assert import_weights.main([*flags, "--weights", str(weights), "--force"]) == 0


@pytest.mark.slow
def test_stages_run_on_an_imported_torchvision_model(folder, resnet18_state, tmp_path, monkeypatch):
    weights = tmp_path / "resnet18.pth"
    torch.save(resnet18_state, weights)
    flags = run_flags(folder, tmp_path)
    assert import_weights.main([*flags, "--weights", str(weights)]) == 0
    run = imported_run(folder, tmp_path)
    test_set = safe_name(f"imagefolder:{folder}")
    caps = ["--max-samples", "12", "--batchsize", "6"]

    made, loader = [], DataLoader     # issue 27: one loader per split for the stage, however many passes
    monkeypatch.setattr(folders, "DataLoader", lambda dataset, **kw: made.append(len(dataset)) or loader(dataset, **kw))
    assert features.main([*flags, *caps]) == 0       # one pass over each split: train (fit), test (distances)
    assert load(run, "features", "eigenvalues")["dims"].shape == (18,)
    assert stage_path(run, "features", "mahalanobis", layer="17", ds=test_set).is_file()

    assert analyzing.main([*flags, *caps, "--ratios", "2", "--num_grams", "8", "--num_stability", "4",
                           "--stability_variants", "original"]) == 0
    assert made == [12, 12] * 2    # features, then analysis: its 3 networks' passes over each split share one loader
    done = done_record(run, "analysis")
    assert done["datasets"] == ["traindata", test_set]  # a folder dataset has no OOD sets
    assert load(run, "analysis", "projections", tag="all", ds=test_set)["norm0"].shape == (12, 18)

    assert kernels.main(flags) == 0
    assert load(run, "kernels", "kernels", ds=test_set)["cka"].shape == (18, 18)

    assert stability.main([*flags, "--P", "4", "--by_layer"]) == 0
    summary = load(run, "stability", "summary")
    assert summary["epoch"] == 1 and summary["test_accuracy"] is None and np.isfinite(summary["output"]["R"])

    assert decompose.main(["indices", *flags, "-k", "2", "--max-samples", "12"]) == 0
    assert decompose.main(["validate", *flags, "-k", "2", "--max-samples", "12"]) == 0
    result = load(run, "decompose-validate", "validate")
    assert 0 <= result["decomposed"]["2"] <= 1 and result["max_form_gap"]["2"] < 1e-5
