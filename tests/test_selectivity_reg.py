"""The class-selectivity regulariser (seed003 §10, Leavitt & Morcos 2021; training.selectivity): it is part of the run's
identity (its own folder, config.json), it lowers the class selectivity of a real tiny training against a plain run
of the same seed, the stages find the regularised run by the flag, and the seed003 report compares the two."""
import numpy as np
import pytest

import averaging
import decompose
import extractor
import reproduce
import train_classifier
from pipeline import plan
from pipeline.contract import load
from pipeline.loaded import load_config
from utils.cli import run_main

TRAIN = ("--width", "0.25", "--epochs", "2")
ALPHA = "-3"   # measured: mean SI of the stage outputs 0.14 -> 0.04 (seed 0), 0.18 -> 0.06 (seed 1)
STAGE_OUTPUTS = ("layer2.0.conv1", "layer3.0.conv1", "linear")   # inputs = outputs of layer1, layer2, layer3 (GAP)


def test_the_regulariser_lowers_selectivity_in_its_own_run_folder(tmp_path, trained_run):
    plain = trained_run(tmp_path, "resnet20", "digits", 0, *TRAIN)
    regularised = trained_run(tmp_path, "resnet20", "digits", 0, *TRAIN, "--selectivity_reg", ALPHA)
    assert plain.group.name == "resnet20" and regularised.group.name == f"resnet20@si{ALPHA}"
    assert load_config(regularised)["flags"]["selectivity_reg"] == float(ALPHA)
    assert "selectivity_reg" not in load_config(plain)["flags"]   # plain runs keep their flags (and done marks)

    common = ["--model-name", "resnet20", "--traindata", "digits", "--workdir", str(tmp_path), "--device", "cpu",
              "-k", "5"]
    for extra in ([], ["--selectivity_reg", ALPHA]):
        for command in ("indices", "validate"):
            assert decompose.main([command, *common, *extra]) == 0
        assert extractor.main([*common[:-2], *extra]) == 0
    mean_si = {}
    for name, run in (("plain", plain), ("regularised", regularised)):
        layers = load(run, "decompose-indices", "selectivity")
        hooked = [layers["names"].tolist().index(module) for module in STAGE_OUTPUTS]
        mean_si[name] = float(np.mean(layers["class_selectivity"][hooked]))
    assert mean_si["regularised"] < 0.6 * mean_si["plain"], mean_si

    assert averaging.main(["--workdir", str(tmp_path)]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    table = report[report.index("Selectivity-regularised against plain nets"):]
    row = next(line for line in table.splitlines() if line.startswith(f"| digits/resnet20 | {ALPHA} | 1/1 | "))
    plain_acc = load(plain, "decompose-validate", "validate")["decomposed"]["5"]
    regularised_acc = load(regularised, "decompose-validate", "validate")["decomposed"]["5"]
    assert f"| {plain_acc:.4g} | {regularised_acc:.4g} |" in row


def test_a_network_without_stages_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(train_classifier.main, ["--model-name", "lenet", "--traindata", "digits", "--workdir", str(tmp_path),
                                         "--epochs", "1", "--device", "cpu", "--selectivity_reg", "-1"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "layer1" in err
    assert not any(tmp_path.rglob("config.json"))


def test_reproduce_adds_the_regularised_runs_to_the_003_grid(tmp_path):
    args = reproduce.parse_args(["--paper", "003", "--workdir", str(tmp_path), "--selectivity_reg", "0", "-0.1"])
    chains, _, _ = plan.build_plan(args, plan.resolve_grid(args))
    assert sorted({chain.lock.parents[2].name for chain in chains}) == ["resnet20", "resnet20@si-0.1"]
    regularised = [c for chain in chains for c in chain.commands if "--selectivity_reg" in c.argv]
    assert {c.stage for c in regularised} >= {"train", "decompose-indices", "decompose-validate", "extract"}
    assert all(c.argv[c.argv.index("--selectivity_reg") + 1] == "-0.1" for c in regularised)
