"""decompose.py on a tiny resnet20 run: indices, validate, essential, finetune, akamaster weights, reports."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

import averaging
import decompose
import extractor
import import_weights
from datasets.normalization import DIGITS_MEAN, DIGITS_STD, IMAGENET_MEAN, IMAGENET_STD
from measures.decomposition import DecomposedHead
from models import build_model
from pipeline.contract import done_record, load, stage_path
from pipeline.loaded import LoadedRun, load_config
from utils.cli import run_main
from utils.errors import ToolkitError
from utils.io import save_torch
from utils.rundir import TRAIN_FILES, RunDir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, trained_run):
    workdir = tmp_path_factory.mktemp("decompose")
    trained_run(workdir, "resnet20", "digits", 0, "--width", "0.5", "--epochs", "3")
    return workdir


def flags(workdir, *extra):
    return ["--model-name", "resnet20", "--traindata", "digits", "--workdir", str(workdir), "--device", "cpu", *extra]


def test_indices_validate_essential_finetune(workdir):
    run = RunDir.of(workdir, "digits", "resnet20", 0)
    log_before = run.train_log.read_text()
    assert decompose.main(["indices", *flags(workdir, "-k", "5", "32")]) == 0
    sets = load(run, "decompose-indices", "indices")
    assert sorted(sets) == ["32", "5"] and all(len(v) == 5 for v in sets["5"].values())
    summary = load(run, "decompose-indices", "summary")
    assert 0 <= summary["5"]["mutual_info_offdiag"] <= summary["5"]["mutual_info"]
    layers = load(run, "decompose-indices", "selectivity")  # every analysis layer, from the same pass (§10)
    assert layers["names"].tolist() == LoadedRun.open(run).layer_names and len(layers["psi"]) == 20
    assert layers["signed"].tolist() == [True] + [False] * 19 and np.isnan(layers["psi"][0])  # the input: undefined
    assert np.all((layers["psi"][1:] > 0) & (layers["psi"][1:] < 1) & (layers["class_selectivity"][1:] > 0))
    assert layers["psi"][-1] == pytest.approx(summary["psi_selectivity_0.5"])  # the last layer = the classifier input
    assert layers["class_selectivity"][-1] == pytest.approx(summary["class_selectivity_index"])
    assert layers["unit_si_19"].mean() == pytest.approx(summary["class_selectivity_index"])

    assert decompose.main(["validate", *flags(workdir, "-k", "5", "32")]) == 0
    result = load(run, "decompose-validate", "validate")
    assert result["decomposed"]["32"] == pytest.approx(result["full"])  # k = D keeps every weight
    assert max(result["max_form_gap"].values()) < 1e-5  # gathered and masked forms agree
    loaded = LoadedRun.open(run)
    assert result["full"] == pytest.approx(loaded.logged_test_accuracy(), abs=1e-6)  # what training logged

    assert decompose.main(["essential", *flags(workdir, "-k", "5")]) == 0
    essential = load(run, "decompose-essential", "essential")["5"]
    assert len(essential["n"]) == 10 and sum(essential["n"]) == 360

    assert decompose.main(["finetune", *flags(workdir, "-k", "5", "--epochs", "1")]) == 0
    curve = load(run, "decompose-finetune", "finetune")["5"]
    assert curve["before"] == pytest.approx(result["decomposed"]["5"]) and len(curve["after_epoch"]) == 1
    assert stage_path(run, "decompose-finetune", "finetuned", k="5").is_file()
    assert run.train_log.read_text() == log_before and run.saved_epochs() == loaded.run.saved_epochs()
    assert done_record(run, "decompose-finetune")["epoch"] == loaded.epoch

    assert decompose.main(["validate", *flags(workdir, "-k", "5", "32")]) == 0  # done: skipped
    assert extractor.main(["--model-name", "resnet20", "--traindata", "digits", "--workdir", str(workdir)]) == 0
    assert averaging.main(["--workdir", str(workdir)]) == 0
    report = (workdir / "report" / "report.md").read_text()
    assert "class-specific filters" in report and "decomposed acc" in report
    table = report[report.index("Selectivity per layer"):]
    assert "| digits/resnet20 | 19 | linear | 32 | 1 |" in table and "![digits/resnet20 per layer]" in report
    assert (workdir / "report" / "seed003_digits_resnet20_layers.png").is_file()


def test_csg_sets_live_beside_ours_and_the_report_compares_them(tmp_path, trained_run):
    """§8: a CSG set is the k SMALLEST gates of its class (the paper's code); with --csg-weights the CSG sets are
    scored on that network (here the run's initialisation, saved as a plain state dict), not on the run's own; the
    report names both and labels the row."""
    run = trained_run(tmp_path, "resnet20", "digits", 0, "--width", "0.5", "--epochs", "3")
    gates = np.random.default_rng(0).random((10, 32)).astype(np.float32)  # (classes, filters at the head: 32)
    np.save(tmp_path / "gates.npy", gates)
    init = LoadedRun.open(run, init=True)
    save_torch(tmp_path / "csg_net.pt", init.model.state_dict())
    csg_net = ["--csg-weights", str(tmp_path / "csg_net.pt"), "--width", "0.5"]
    for command in ("indices", "validate", "essential"):
        assert decompose.main([command, *flags(tmp_path, "-k", "5")]) == 0
    ours = {name: load(run, f"decompose-{name}", name) for name in ("indices", "validate", "essential")}

    assert decompose.main(["indices", *flags(tmp_path, "-k", "5"), "--csg-gates", str(tmp_path / "gates.npy"),
                           *csg_net]) == 0
    for command in ("validate", "essential"):
        assert decompose.main([command, *flags(tmp_path, "-k", "5", "--source", "csg"), *csg_net]) == 0
    assert {name: load(run, f"decompose-{name}", name) for name in ours} == ours  # CSG wrote beside ours
    csg_sets = load(run, "decompose-csg-indices", "indices")["5"]
    assert csg_sets == {str(c): np.argsort(gates[c], kind="stable")[:5].tolist() for c in range(10)}  # smallest
    assert csg_sets != ours["indices"]["5"]
    largest = decompose.sets_from_gates(str(tmp_path / "gates.npy"), [5.0], "largest")["5"]
    assert [s.tolist() for s in largest] == [np.argsort(-gates[c])[:5].tolist() for c in range(10)]
    test = init.dataset("test")
    with torch.no_grad():
        init_acc = init.accuracy(init.model(init.inputs(test.images)), test.labels)
    csg_validate = load(run, "decompose-csg-validate", "validate")
    assert csg_validate["full"] == pytest.approx(init_acc, abs=1e-12) != ours["validate"]["full"]

    assert extractor.main(["--model-name", "resnet20", "--traindata", "digits", "--workdir", str(tmp_path)]) == 0
    extract = load(run, "extract", "seed003")
    csg_summary = load(run, "decompose-csg-indices", "summary")
    assert extract["decomposed_acc"] == ours["validate"]["decomposed"]
    assert extract["csg"]["decomposed_acc"] == csg_validate["decomposed"]
    assert extract["csg"]["mutual_info"]["5"] == csg_summary["5"]["mutual_info"]
    assert (extract["csg"]["csg_order"], extract["csg"]["scored_on"], extract["network"]) == ("smallest", "csg_net.pt",
                                                                                               "")
    assert averaging.main(["--workdir", str(tmp_path)]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    comparison = report[report.index("Ours against CSG"):]
    assert "MI CSG" in comparison and "S_c replaced: CSG" in comparison and "decomposed acc CSG" in comparison
    row = next(line for line in comparison.splitlines() if line.startswith("| digits/resnet20 | 5 |"))
    assert f"| {csg_summary['5']['mutual_info']:.4g} |" in row
    assert row.endswith("| smallest | csg_net.pt | paper's protocol, other data | - | - |")


def test_csg_gates_are_read_from_a_checkpoint_dict_too(tmp_path):
    """The authors' CSG checkpoint keeps its (classes, filters) gates under 'csg' (§8)."""
    gates = torch.tensor([[0.3, 0.1, 0.5, 0.2], [0.0, 0.9, 0.4, 0.6]])
    save_torch(tmp_path / "csg.pth", {"csg": gates, "state_dict": {}})
    save_torch(tmp_path / "other.pth", {"state_dict": {}})
    sets = decompose.sets_from_gates(str(tmp_path / "csg.pth"), [2.0])["2"]
    assert [s.tolist() for s in sets] == [[1, 3], [0, 2]]   # argsort(1)[:, :2], the smallest gates
    with pytest.raises(ToolkitError, match="'csg'"):
        decompose.sets_from_gates(str(tmp_path / "other.pth"), [2.0])


def test_report_protocols_and_the_papers_numbers():
    """The protocol of a seed003 row and the paper's numbers beside it (reports.references, spec §2, §9)."""
    from reports import Group
    from reports.seed003 import _protocol, _reference

    assert _protocol(Group("cifar10", "resnet20", ())) == "paper"
    assert _protocol(Group("digits", "resnet20", ())) == "paper-other"
    assert _protocol(Group("cifar10", "resnet20@si-0.1", ())) == "extra"
    cifar = Group("cifar10", "resnet20", ())
    assert [_reference(cifar, "paper", row) for row in ("full", "decomposed k=5", "finetuned k=5",
                                                        "mutual information k=5", "mutual information CSG k=5",
                                                        "decomposed k=10")] == [
        "0.9171 (paper)", "0.8859 (paper)", "0.9130 (paper)", "0.0345 (paper)", "0.0375 (paper)", "-"]
    assert _reference(cifar, "extra", "full") == "-"


@pytest.mark.parametrize("dataset, grid", [
    ("cifar10", range(5, 31, 5)), ("digits", range(5, 31, 5)), ("imagenet", range(10, 101, 10)),
    ("imagefolder:/data/tiny-imagenet-200", range(5, 51, 5)),
])
def test_the_default_k_grid_is_the_papers(dataset, grid):
    assert decompose.requested_ks(decompose.parse_args(["indices", "--traindata", dataset])) == list(grid)
    assert decompose.requested_ks(decompose.parse_args(["indices", "--traindata", dataset, "-k", "7"])) == [7]


def test_indices_without_k_take_the_default_grid(tmp_path, trained_run):
    run = trained_run(tmp_path, "resnet20", "digits", 0, "--width", "0.5", "--epochs", "3")
    assert decompose.main(["indices", *flags(tmp_path, "--max-samples", "300")]) == 0
    assert sorted(load(run, "decompose-indices", "indices"), key=float) == ["5", "10", "15", "20", "25", "30"]


def test_a_narrow_network_skips_the_default_ks_it_cannot_hold(tmp_path, trained_run, capsys):
    run = trained_run(tmp_path, "resnet20", "digits", 0, "--width", "0.25", "--epochs", "1")  # 16 filters at the head
    small = flags(tmp_path, "--max-samples", "300")
    for command in ("indices", "validate", "essential", "finetune"):
        assert decompose.main([command, *small, *(["--epochs", "1"] if command == "finetune" else [])]) == 0
        assert done_record(run, f"decompose-{command}")["skipped_k"] == ["20", "25", "30"]
    notes = capsys.readouterr().err.strip().splitlines()
    assert notes == ["note: k = 20, 25, 30 of the default grid skipped: the classifier input of resnet20 has 16 "
                     "filters"]  # once, where the grid meets the layer
    summary = load(run, "decompose-indices", "summary")
    assert summary["skipped_k"] == ["20", "25", "30"] and summary["filters"] == 16
    assert sorted(load(run, "decompose-validate", "validate")["decomposed"], key=float) == ["5", "10", "15"]
    assert sorted(load(run, "decompose-finetune", "finetune"), key=float) == ["5", "10", "15"]

    with pytest.raises(SystemExit) as exit_info:  # an explicit k that does not fit: one line, exit 2
        run_main(decompose.main, ["validate", *small, "-k", "5", "20", "--force"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "-k 20 exceeds the 16 filters" in err
    with pytest.raises(ToolkitError, match="no filter sets for k = 7"):  # -k picks among the stored sets
        decompose.main(["validate", *small, "-k", "7", "--force"])

    assert extractor.main(["--model-name", "resnet20", "--traindata", "digits", "--workdir", str(tmp_path)]) == 0
    assert averaging.main(["--workdir", str(tmp_path)]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "digits/resnet20: k = 20, 25, 30 of the default grid skipped (more than the 16 filters" in report


def akamaster_file(path):
    """A file in the layout of akamaster's resnet20-12fca82f.th (seed003 §3): {"best_prec1", "state_dict"}."""
    model = build_model("resnet20", 10)
    state = {f"module.{k}": v for k, v in model.state_dict().items() if "num_batches_tracked" not in k}
    return save_torch(path, {"best_prec1": 91.7, "state_dict": state})


def test_akamaster_weights_and_an_indices_file(workdir, tmp_path, capsys):
    weights = akamaster_file(tmp_path / "resnet20-12fca82f.th")
    indices = tmp_path / "resnet20_cifar-10_indices.json"
    indices.write_text(json.dumps({str(c): [c, c + 10, c + 20, c + 30, c + 40] for c in range(10)}))
    out = tmp_path / "runs"
    assert decompose.main(["validate", "--model-name", "resnet20", "--traindata", "digits", "--workdir", str(out),
                           "--device", "cpu", "--weights", str(weights), "--normalization", "imagenet",
                           "--indices", str(indices), "-k", "5"]) == 0
    run = RunDir.of(out, "digits", "resnet20", 0)
    result = load(run, "decompose-validate", "validate")
    assert set(result["decomposed"]) == {"5"}
    assert "note:" not in capsys.readouterr().err  # ImageNet statistics are what akamaster's file was trained with
    assert done_record(run, "decompose-validate")["epoch"] == -1


def two_filter_sets(path):
    path.write_text(json.dumps({str(c): [c, c + 1] for c in range(10)}))
    return str(path)


def test_akamaster_weights_get_imagenet_statistics_and_a_mismatch_is_stated(tmp_path, capsys):
    weights = akamaster_file(tmp_path / "resnet20-12fca82f.th")
    run = RunDir.of(tmp_path, "digits", "resnet20", 0)
    argv = ["validate", *flags(tmp_path, "--weights", str(weights), "--indices", two_filter_sets(tmp_path / "s.json"))]
    assert decompose.main(argv) == 0
    record = done_record(run, "decompose-validate")
    assert (record["mean"], record["std"]) == (list(IMAGENET_MEAN), list(IMAGENET_STD))
    assert capsys.readouterr().err == ""
    assert decompose.main([*argv, "--normalization", "dataset"]) == 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--normalization dataset" in err and "differs" in err
    record = done_record(run, "decompose-validate")
    assert (record["mean"], record["std"]) == (list(DIGITS_MEAN), list(DIGITS_STD))

    imported = ["--model-name", "resnet20", "--traindata", "digits", "--workdir", str(tmp_path / "imported"),
                "--weights", str(weights)]
    assert import_weights.main(imported) == 0
    config = load_config(RunDir.of(tmp_path / "imported", "digits", "resnet20", 0))
    assert (config["data"]["mean"], config["data"]["std"]) == (list(IMAGENET_MEAN), list(IMAGENET_STD))
    assert config["imported"]["normalization"] == "imagenet" and capsys.readouterr().err == ""
    assert import_weights.main([*imported, "--normalization", "dataset", "--force"]) == 0
    assert "differs" in capsys.readouterr().err
    assert load_config(RunDir.of(tmp_path / "imported", "digits", "resnet20", 0))["data"]["mean"] == list(DIGITS_MEAN)


def test_a_run_fed_other_statistics_than_it_was_trained_with_is_stated(tmp_path, trained_run, capsys):
    run = trained_run(tmp_path, "resnet20", "digits", 0, "--width", "0.5", "--epochs", "3")
    argv = ["validate", *flags(tmp_path, "--indices", two_filter_sets(tmp_path / "s.json"), "--max-samples", "50")]
    assert decompose.main([*argv, "--normalization", "dataset"]) == 0  # what the run was trained with
    assert capsys.readouterr().err == ""
    assert decompose.main([*argv, "--normalization", "imagenet"]) == 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and TRAIN_FILES["config"] in err and "using imagenet as asked" in err
    assert done_record(run, "decompose-validate")["mean"] == list(IMAGENET_MEAN)


def test_a_one_output_hinge_head_is_refused(tmp_path, trained_run):
    trained_run(tmp_path, "lenet", "twopoints", 0, "--ptr", "256", "--epochs", "1")
    with pytest.raises(ToolkitError, match="needs a multi-class head") as error:
        decompose.main(["validate", "--model-name", "lenet", "--traindata", "twopoints", "--workdir", str(tmp_path),
                        "--device", "cpu", "--ptr", "256", "-k", "5"])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("argv, message", [
    (["validate", "--model-name", "resnet20", "--traindata", "digits", "--seed", "9"], "no trained run"),
    (["indices", "-k", "0"], "-k takes"),
])
def test_bad_input_is_one_line(workdir, argv, message):
    result = subprocess.run([sys.executable, "decompose.py", *argv, "--workdir", str(workdir)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr


def test_sets_file_is_validated(tmp_path):
    bad = tmp_path / "sets.json"
    bad.write_text(json.dumps({"0": [1, 2], "1": [99]}))
    with pytest.raises(Exception, match="class"):
        decompose.sets_from_json(bad, num_classes=2, n_filters=64, ks=[5])
    assert torch.equal(decompose.sets_from_json(bad, 2, 100, [5])["5"][1], torch.tensor([99]))


# ---- the stages against hand computations (§5, §6, §7) -------------------------------------------------------
@pytest.fixture(scope="module")
def measured(tmp_path_factory, trained_run):
    """A trained resnet20 (width 0.5, 3 epochs) with indices, validate, essential and a 1-epoch finetune at k = 5."""
    workdir = tmp_path_factory.mktemp("by_hand")
    run = trained_run(workdir, "resnet20", "digits", 0, "--width", "0.5", "--epochs", "3")
    for command, extra in (("indices", []), ("validate", []), ("essential", ["--noise-seed", "3"]),
                           ("finetune", ["--epochs", "1", "--max-samples", "400"])):
        assert decompose.main([command, *flags(workdir, "-k", "5", *extra)]) == 0
    sets = load(run, "decompose-indices", "indices")["5"]
    return run, [sets[str(c)] for c in range(10)]


def classifier_features_by_hand(run):
    """(the model's classifier Linear, its input features on the whole test split, labels), by one plain hook."""
    loaded = LoadedRun.open(run)
    test = loaded.dataset("test")
    captured = []
    hook = loaded.model.linear.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    with torch.no_grad():
        loaded.model(loaded.inputs(test.images))
    hook.remove()
    return loaded.model.linear, captured[0], test.labels


def test_decomposed_accuracy_equals_a_masked_linear_by_hand(measured):
    """§5: class c's logit reads only S_c; zero every other feature and take row c of the full Linear layer."""
    run, sets = measured
    linear, features, labels = classifier_features_by_hand(run)
    with torch.no_grad():
        logits = torch.stack([linear(features * _indicator(s, features.shape[1]))[:, c] for c, s in enumerate(sets)],
                             dim=1)
    by_hand = int((logits.argmax(1) == labels).sum()) / len(labels)
    assert load(run, "decompose-validate", "validate")["decomposed"]["5"] == pytest.approx(by_hand, abs=1e-12)
    assert by_hand != int((linear(features).argmax(1) == labels).sum()) / len(labels)   # not the full layer's


def test_essentiality_counts_equal_a_replacement_by_hand(measured):
    """§7: per class, the features of S_c (or all the others) replaced by N(0, 1), through the ORIGINAL Linear;
    one standard-normal draw per feature entry, class by class, S_c first (generator seeded by --noise-seed)."""
    run, sets = measured
    linear, features, labels = classifier_features_by_hand(run)
    generator = torch.Generator().manual_seed(3)
    inf, noninf = [], []
    for c, chosen in enumerate(sets):
        f = features[labels == c]
        noise = torch.randn(f.shape, generator=generator)
        corrupted = f.clone()
        corrupted[:, chosen] = noise[:, chosen]
        inf.append(int((linear(corrupted).argmax(1) == c).sum()))
        noise = torch.randn(f.shape, generator=generator)
        corrupted = noise.clone()
        corrupted[:, chosen] = f[:, chosen]
        noninf.append(int((linear(corrupted).argmax(1) == c).sum()))
    essential = load(run, "decompose-essential", "essential")["5"]
    assert (essential["noise_at_inf"], essential["noise_at_noninf"]) == (inf, noninf)


def test_finetune_changes_the_backbone_and_keeps_the_sets(measured):
    """§6: the whole backbone trains, the sets stay fixed; the saved network scores what finetune.json records."""
    run, sets = measured
    loaded = LoadedRun.open(run)
    original = loaded.model.state_dict()
    tuned = load(run, "decompose-finetune", "finetuned", k="5")
    assert [sorted(row) for row in tuned["linear.index"].tolist()] == [sorted(s) for s in sets]
    assert bool(tuned["linear.valid"].all()) and "linear.weight" not in tuned
    convs = [key for key in original if key.endswith("conv1.weight") or key.endswith("conv2.weight")]
    assert all(not torch.equal(original[key], tuned[key]) for key in convs)   # every conv of the backbone moved
    assert torch.equal(LoadedRun.open(run).model.linear.weight, original["linear.weight"])  # the run is untouched

    model = loaded.model
    model.linear = DecomposedHead(original["linear.weight"], original["linear.bias"], [torch.tensor(s) for s in sets])
    model.load_state_dict(tuned)
    test = loaded.dataset("test")
    images, labels = test.images[:400], test.labels[:400]   # finetune --max-samples 400
    with torch.no_grad():
        correct = int((model.eval()(loaded.inputs(images)).argmax(1) == labels).sum())
    assert load(run, "decompose-finetune", "finetune")["5"]["after_epoch"] == [pytest.approx(correct / len(labels))]


def _indicator(chosen, n):
    mask = torch.zeros(n)
    mask[chosen] = 1.0
    return mask


def test_the_full_003_grid_measures_akamasters_checkpoint_when_given_and_says_so_when_not(tmp_path, capsys):
    """Issue 28 item 12: --akamaster-weights imports the paper's network into <workdir>/akamaster and runs the 003
    stages on it; without it, --full --print names the import it leaves out; the full grid finetunes at lr 2e-4."""
    import reproduce
    from pipeline import plan

    common = ["--paper", "003", "--full", "--workdir", str(tmp_path / "w"), "--print"]
    assert reproduce.main(common) == 0
    printed = capsys.readouterr().out.splitlines()
    assert not any("import_weights.py" in line for line in printed[:-1])
    assert printed[-1].startswith("# ") and "--akamaster-weights resnet20-12fca82f.th" in printed[-1]
    assert "python import_weights.py --model-name resnet20 --traindata cifar10" in printed[-1]
    assert any(line.startswith("python decompose.py finetune") and line.endswith("--epochs 10 --lr 2e-4")
               for line in printed)

    weights = tmp_path / "resnet20-12fca82f.th"
    weights.write_bytes(b"")
    args = reproduce.parse_args([*common, "--akamaster-weights", str(weights)])
    chains, _, final = plan.build_plan(args, plan.resolve_grid(args))
    imported = next(chain for chain in chains if chain.commands[0].argv[0] == "import_weights.py")
    assert imported.commands[0].argv[imported.commands[0].argv.index("--weights") + 1] == str(weights)
    assert imported.commands[0].argv[imported.commands[0].argv.index("--workdir") + 1] == str(tmp_path / "w" /
                                                                                              "akamaster")
    assert [c.stage for c in imported.commands[1:]] == ["decompose-indices", "decompose-validate",
                                                        "decompose-essential", "decompose-finetune", "extract"]
    assert len(chains) == 2 and len(final) == 2   # the trained net and the imported one, each averaged
    missing = reproduce.parse_args([*common, "--akamaster-weights", str(tmp_path / "absent.th")])
    with pytest.raises(ToolkitError, match="absent.th"):
        plan.validate(plan.resolve_grid(missing), "data")
