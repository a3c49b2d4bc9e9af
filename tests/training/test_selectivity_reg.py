"""The class-selectivity regulariser (seed003 §10, Leavitt & Morcos 2021; training.selectivity): it is part of the run's
identity (its own folder, config.json); by default it fine-tunes the trained plain run of the same seed (the paper's
repo 2), from initialisation as a labelled extra; it lowers the class selectivity of a real tiny training, the stages
find the regularised run by the flag, the grid trains the plain run first, and the seed003 report compares the two."""
import numpy as np
import pytest
import torch

import averaging
import decompose
import extractor
import reproduce
import train_classifier
from measures.decomposition import class_selectivity_index
from models import build_model
from pipeline import plan
from pipeline.contract import load
from pipeline.loaded import checkpoint_path, load_config
from training.recipes import get_recipe
from training.selectivity import SelectivityRegularizer
from utils.cli import run_main
from utils.errors import ToolkitError
from utils.io import load_torch, save_torch, sha256_of
from utils.rundir import TRAIN_FILES, RunDir

TRAIN = ("--width", "0.25", "--epochs", "2")
ALPHA = "-3"   # measured: mean SI of the stage outputs 0.14 -> 0.04 (seed 0), 0.18 -> 0.06 (seed 1)
STAGE_OUTPUTS = ("layer2.0.conv1", "layer3.0.conv1", "linear")   # inputs = outputs of layer1, layer2, layer3 (GAP)
SCRATCH = ("--selectivity_start", "scratch")


def stage_output_selectivity(run) -> np.ndarray:
    """The class selectivity index of the hooked stage outputs, measured by decompose.py indices."""
    layers = load(run, "decompose-indices", "selectivity")
    return layers["class_selectivity"][[layers["names"].tolist().index(module) for module in STAGE_OUTPUTS]]


def test_the_default_fine_tunes_the_trained_plain_run_and_lowers_selectivity(tmp_path, trained_run):
    """seed003 §10 (repo 2's finetune_with_selectivity_regularizer): epoch 0 of the regularised run is the plain run's
    trained network, the recipe is Adam 2e-4 / batch 128 / 10 epochs, the inputs are normalised as the plain run's;
    fine-tuning at alpha < 0 leaves every hooked stage output less selective than at alpha > 0 from the same start
    (measured: 0.051 0.044 0.194 against 0.178 0.281 0.508 at lr 2e-3, 2 epochs)."""
    plain = trained_run(tmp_path, "resnet20", "digits", 0, *TRAIN)
    common = ["--model-name", "resnet20", "--traindata", "digits", "--workdir", str(tmp_path), "--device", "cpu"]
    selectivity = {}
    for alpha in ("-3", "3"):
        assert train_classifier.main([*common, "--no-progress", "--epochs", "2", "--lr", "2e-3",
                                      "--selectivity_reg", alpha]) == 0
        regularised = RunDir.of(tmp_path, "digits", "resnet20", 0, f"si{alpha}")
        assert decompose.main(["indices", *common, "-k", "5", "--selectivity_reg", alpha]) == 0
        selectivity[alpha] = stage_output_selectivity(regularised)
    config, start = load_config(regularised), load_torch(regularised.epoch_checkpoint(0))["model"]
    trained = load_torch(checkpoint_path(plain))["model"]
    assert all(torch.equal(start[key], trained[key]) for key in trained)
    assert config["recipe"]["name"] == "seed003_selectivity" and config["recipe"]["optimizer"] == "adam"
    assert config["recipe"]["batchsize"] == 128 and config["recipe"]["wdecay"] == 0.0
    assert config["model"]["width"] == 0.25 and config["data"]["mean"] == load_config(plain)["data"]["mean"]
    assert config["flags"]["selectivity_start"] == "finetune"
    assert config["flags"]["start_sha256"] == sha256_of(checkpoint_path(plain))
    assert (selectivity["-3"] < selectivity["3"]).all(), selectivity
    again = [*common, "--no-progress", "--epochs", "2", "--lr", "2e-3", "--selectivity_reg", "3", "--resume"]
    last = regularised.last.read_bytes()
    assert train_classifier.main(again) == 0 and regularised.last.read_bytes() == last   # done: nothing to do
    checkpoint = load_torch(checkpoint_path(plain))
    checkpoint["model"]["linear.bias"] += 1.0   # the plain run retrained: the fine-tune no longer starts from it
    save_torch(checkpoint_path(plain), checkpoint)
    with pytest.raises(ToolkitError, match="other flags"):
        train_classifier.main(again)
    defaults = get_recipe("seed003_selectivity")
    assert (defaults.epochs, defaults.lr, defaults.batchsize, defaults.optimizer) == (10, 2e-4, 128, "adam")


def test_a_fine_tune_without_its_trained_plain_run_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(train_classifier.main, ["--model-name", "resnet20", "--traindata", "digits", "--workdir",
                                         str(tmp_path), "--device", "cpu", "--selectivity_reg", "-0.1"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "--selectivity_start scratch" in err
    assert not any(tmp_path.rglob(TRAIN_FILES["config"]))


def test_the_penalty_is_the_mean_stage_selectivity_and_zero_on_a_one_class_batch():
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=4, in_channels=3, width=0.25, image_size=8)
    regularizer = SelectivityRegularizer(model, -0.5, num_classes=4)
    with pytest.raises(RuntimeError, match="forward pass"):
        regularizer.penalty(torch.zeros(2, dtype=torch.long))
    x, labels = torch.rand(12, 3, 8, 8), torch.arange(12) % 4
    with regularizer.watch() as taps:
        model(x)
    expected = torch.stack([class_selectivity_index(v.float(), labels).mean() for v in taps.values]).mean()
    assert torch.equal(regularizer.penalty(labels), 0.5 * expected)
    with regularizer.watch():
        model(x[labels == 1])
    assert regularizer.penalty(labels[labels == 1]).item() == 0.0


@pytest.mark.slow   # the default fine-tune's test guards the regulariser, the lenet refusal test the scratch path
def test_the_scratch_extra_lowers_selectivity_in_its_own_run_folder(tmp_path, trained_run):
    plain = trained_run(tmp_path, "resnet20", "digits", 0, *TRAIN)
    regularised = trained_run(tmp_path, "resnet20", "digits", 0, *TRAIN, "--selectivity_reg", ALPHA, *SCRATCH)
    assert plain.group.name == "resnet20" and regularised.group.name == f"resnet20@si{ALPHA}"
    assert load_config(regularised)["flags"]["selectivity_reg"] == float(ALPHA)
    assert "selectivity_reg" not in load_config(plain)["flags"]   # plain runs keep their flags (and done marks)

    common = ["--model-name", "resnet20", "--traindata", "digits", "--workdir", str(tmp_path), "--device", "cpu",
              "-k", "5"]
    for extra in ([], ["--selectivity_reg", ALPHA]):
        for command in ("indices", "validate"):
            assert decompose.main([command, *common, *extra]) == 0
        assert extractor.main([*common[:-2], *extra]) == 0
    mean_si = {name: float(np.mean(stage_output_selectivity(run)))
               for name, run in (("plain", plain), ("regularised", regularised))}
    assert mean_si["regularised"] < 0.6 * mean_si["plain"], mean_si

    assert averaging.main(["--workdir", str(tmp_path)]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    table = report[report.index("Selectivity-regularised against plain nets"):]
    row = next(line for line in table.splitlines() if line.startswith(f"| digits/resnet20 | {ALPHA} | 5 | 1/1 | "))
    plain_acc = load(plain, "decompose-validate", "validate")["decomposed"]["5"]
    regularised_acc = load(regularised, "decompose-validate", "validate")["decomposed"]["5"]
    assert f"| {plain_acc:.4g} | {regularised_acc:.4g} |" in row


def test_a_network_without_stages_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(train_classifier.main, ["--model-name", "lenet", "--traindata", "digits", "--workdir", str(tmp_path),
                                         "--epochs", "1", "--device", "cpu", "--selectivity_reg", "-1", *SCRATCH])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "layer1" in err
    assert not any(tmp_path.rglob(TRAIN_FILES["config"]))


def test_reproduce_adds_the_regularised_runs_to_the_003_grid_after_their_plain_runs(tmp_path):
    """Each regularised run fine-tunes its plain run, so its commands follow the plain run's in one chain (the plain
    network is trained first and by one chain only), its training takes the fine-tune recipe (no --epochs or
    --recipe of the part); without the plain runs in the grid, their training comes first in the chain."""
    for alphas, plain_stages in ((["0", "-0.1"], 6), (["-0.1"], 1)):
        args = reproduce.parse_args(["--paper", "003", "--workdir", str(tmp_path), "--selectivity_reg", *alphas])
        chains, _, _ = plan.build_plan(args, plan.resolve_grid(args))
        assert [chain.lock.parents[2].name for chain in chains] == ["resnet20" if len(alphas) == 2 else
                                                                      "resnet20@si-0.1"] * 2
        for chain in chains:
            first, regularised = chain.commands[:plain_stages], chain.commands[plain_stages:]
            assert first[0].stage == "train" and "--epochs" in first[0].argv
            assert not any("--selectivity_reg" in c.argv for c in first)
            assert [c.stage for c in regularised] == ["train", "decompose-indices", "decompose-validate",
                                                      "decompose-essential", "decompose-finetune", "extract"]
            assert all(c.argv[c.argv.index("--selectivity_reg") + 1] == "-0.1" for c in regularised)
            assert "--epochs" not in regularised[0].argv and "--recipe" not in regularised[0].argv
