"""The seed000 stages as the paper measured them, and with OOD sets of the user's choosing: every threshold's files
with repeated networks copied, the original's norm0 corner bug on request, the paper's sizes in reproduce.py's full
grid, and --ood-sets/--near-ood/--validation-ood (class-less imagefolder:PATH sets included) recorded and honoured.

References: patch multiplicities counted window by window with numpy, logits of the folder's images through the
network directly. Every stage path comes from pipeline.contract.
"""
import re
import shlex
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

import analyzing
import features
import kernels
import reproduce
from measures.ood import patch_energy
from pipeline.contract import TRAIN_SET, done, done_record, stage, stage_path
from pipeline.evaluation import choice_summary, detection_sets, near_set, ood_choice, set_tag
from pipeline.loaded import LoadedRun
from utils.errors import ToolkitError
from utils.rundir import RunDir
from utils.taps import capture_inputs

L = 18
TINY = ("--num_grams", "6", "--num_stability", "3", "--stability_variants", "original")


@pytest.fixture
def workdir(tmp_path, trained_run):
    trained_run(tmp_path, "resnet18", "digits", 0, "--width", "0.125", "--epochs", "2")
    return tmp_path


def flags(workdir, *extra, samples=12):
    return ["--model-name", "resnet18", "--traindata", "digits", "--seed", "0", "--workdir", str(workdir),
            "--device", "cpu", "--max-samples", str(samples), "--batchsize", "12", *extra]


def load(path):
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def write_images(folder, count, size=32, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)
    for index, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{index:03d}.png")
    return pixels


# ---- the threshold grid -------------------------------------------------------------------------------------------
def test_every_threshold_has_files_and_a_repeated_network_copies_the_first(workdir):
    assert analyzing.main(flags(workdir, "--ratios", "53", *TINY, samples=4)) == 0
    run = RunDir.of(workdir, "digits", "resnet18", 0)
    svals, record = load(stage_path(run, "analysis", "svals")), done_record(run, "analysis")
    assert svals["ratio_index"].tolist() == list(range(53)) and svals["ndims"].shape == (L, 53)
    same = svals["same_as"]
    for column in range(53):  # a threshold shares the network of the first one with the same ranks
        first = int(np.flatnonzero((svals["ndims"] == svals["ndims"][:, [column]]).all(0))[0])
        assert same[column] == first
    tags = [f"{q:03d}" for q in range(53)]
    assert record["variants"] == ["all", *tags]
    assert record["reused"] == {tags[c]: tags[same[c]] for c in range(53) if same[c] != c}
    assert record["reused"]  # the lowest thresholds keep every singular value here: the same network
    for copy, first in record["reused"].items():
        assert record["test_accuracy"][copy] == record["test_accuracy"][first]
        for ds in record["datasets"]:
            a, b = (load(stage_path(run, "analysis", "projections", tag=t, ds=ds)) for t in (copy, first))
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


# ---- the original's norm0 ----------------------------------------------------------------------------------------
def multiplicity(h, w, stride=1, bug=False):
    """How many 3x3 windows (pad 1) cover each pixel, counted window by window; with `bug`, seed000's stride-1
    formula: its fourth corner term (x4) takes the right edge without its corners instead of the bottom-right
    pixel (maps larger than 2x2 only)."""
    count = np.zeros((h + 2, w + 2))
    for i in range(0, h, stride):
        for j in range(0, w, stride):
            count[i:i + 3, j:j + 3] += 1
    count = count[1:-1, 1:-1]
    if bug and h > 2 and w > 2:
        count[-1, -1] -= 4
        count[1:-1, -1] += 4
    return count


def test_corner_bug_offset_against_window_counts():
    torch.manual_seed(0)
    conv, strided = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
    for layer, shape, stride in ((conv, (2, 3, 5, 6), 1), (conv, (2, 3, 2, 2), 1), (strided, (2, 3, 6, 6), 2)):
        x = torch.randn(shape)
        x2 = (x.double() ** 2).sum(1).numpy()
        exact = patch_energy(x, layer).numpy()
        np.testing.assert_allclose(exact, (x2 * multiplicity(*shape[2:], stride)).sum((1, 2)), rtol=1e-10)
        buggy = exact + analyzing.corner_bug_offset(x, layer).numpy()
        bugged = (x2 * multiplicity(*shape[2:], stride, bug=stride == 1)).sum((1, 2))  # stride 2: exact there too
        np.testing.assert_allclose(buggy, bugged, rtol=1e-10)
    assert multiplicity(2, 2).tolist() == [[4, 4], [4, 4]]  # seed000: x4 everywhere on a 2x2 map


def test_norm0_corner_bug_flag_moves_stride_one_conv_layers_only(workdir):
    assert analyzing.main(flags(workdir, "--ratios", "1", "--norm0-corner-bug", *TINY)) == 0
    run = RunDir.of(workdir, "digits", "resnet18", 0)
    record = done_record(run, "analysis")
    assert record["flags"]["norm0_corner_bug"] is True and record["norm0_corner_bug"] is True
    loaded = LoadedRun.open(run)
    saved = load(stage_path(run, "analysis", "projections", tag="all", ds="digits"))
    feats, _ = capture_inputs(loaded.model, loaded.layers, loaded.inputs(loaded.dataset("test").images[:12]))
    moved = 0
    for index, (layer, x) in enumerate(zip(loaded.layers, feats)):
        if x.dim() == 2:
            np.testing.assert_allclose(saved["norm0"][:, index], saved["norm00"][:, index])
            continue
        stride = layer.stride[0]
        x2 = (x.double() ** 2).sum(1).numpy()
        expected = (x2 * multiplicity(*x.shape[2:], stride, bug=stride == 1)).sum((1, 2))
        np.testing.assert_allclose(saved["norm0"][:, index], expected, rtol=1e-5)
        moved += stride == 1 and x.shape[2] > 2
    assert moved == 14  # resnet18: every 3x3 conv but the three stride-2 ones and the classifier


# ---- OOD sets of the user's choosing -----------------------------------------------------------------------------
def test_chosen_ood_sets_are_measured_named_and_recorded_and_a_new_choice_recomputes(workdir, capsys):
    folder = workdir / "my textures"
    pixels = write_images(folder / "sub", 5)
    name = f"imagefolder:{folder}"
    choice = ("--ood-sets", name, "uniform", "--near-ood", "uniform")
    assert analyzing.main(flags(workdir, "--ratios", "1", *TINY, *choice)) == 0
    assert features.main(flags(workdir, *choice)) == 0
    assert kernels.main(flags(workdir)) == 0
    run = RunDir.of(workdir, "digits", "resnet18", 0)
    tag = set_tag(name)
    assert re.fullmatch(r"[A-Za-z0-9_.+-]+", tag) and tag.endswith("my_textures")
    sets = [TRAIN_SET, "digits", tag, "uniform", "digits_vflip"]
    for name_of_stage in ("analysis", "features", "kernels"):
        record = done_record(run, name_of_stage)
        assert record["datasets"] == (sets[1:] if name_of_stage == "features" else sets)
        assert record["ood_sets"] == [name, "uniform"] and record["near_ood"] == "uniform"
        assert record["validation_ood"] == "digits_vflip"
        assert record["ood_note"].startswith(f"{name}: images of another size resized (shorter side, bilinear) and "
                                             "centre-cropped")
        assert record["ood_tags"] == {tag: name, "uniform": "uniform", "digits_vflip": "digits_vflip"}
        assert detection_sets("digits", record["datasets"], record) == [tag, "uniform", "digits_vflip"]
        assert near_set("digits", record) == "uniform"
    assert done_record(run, "analysis")["flags"]["ood_sets"] == [name, "uniform"]
    assert done_record(run, "features")["flags"]["allow_tf32"] is False     # the precision is part of the record
    # the folder's images, in pixel space, are what the network saw
    saved = load(stage_path(run, "analysis", "projections", tag="all", ds=tag))
    loaded = LoadedRun.open(run)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    _, logits = capture_inputs(loaded.model, loaded.layers, loaded.inputs(images))
    np.testing.assert_allclose(saved["logits"], logits.numpy(), rtol=1e-4, atol=1e-4)
    assert (saved["labels"] == -1).all() and saved["norm00_bn"].shape == (5, L)
    assert load(stage_path(run, "features", "mahalanobis", layer="17", ds=tag))["distance_full"].shape == (5,)
    assert load(stage_path(run, "kernels", "kernels", ds=tag))["cka"].shape == (L, L)

    capsys.readouterr()
    other = ("--ood-sets", "photos")   # no --near-ood: the first set, with a note
    assert analyzing.main(flags(workdir, "--ratios", "1", *TINY, *other)) == 0
    assert features.main(flags(workdir, *other)) == 0
    assert kernels.main(flags(workdir)) == 0
    out = capsys.readouterr()
    assert "nothing to do" not in out.out and out.err.count("note: --near-ood not given") == 2
    for name_of_stage in ("analysis", "kernels"):
        record = done_record(run, name_of_stage)
        assert record["datasets"] == [TRAIN_SET, "digits", "photos", "digits_vflip"]
        assert record["near_ood"] == "photos" and "--near-ood not given" in record["ood_note"]
    assert analyzing.main(flags(workdir, "--ratios", "1", *TINY, *other)) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_bad_folders_are_one_line_and_keep_the_finished_stage(workdir):
    run = RunDir.of(workdir, "digits", "resnet18", 0)
    assert analyzing.main(flags(workdir, "--ratios", "1", *TINY)) == 0
    before = done_record(run, "analysis")
    (workdir / "broken").mkdir()
    (workdir / "broken" / "x.png").write_bytes(b"not an image")
    (workdir / "empty").mkdir()
    for folder, message in (("broken", "is not a readable image"), ("empty", "no image files")):
        with pytest.raises(ToolkitError, match=message):
            analyzing.main(flags(workdir, "--ratios", "1", *TINY, "--ood-sets", f"imagefolder:{workdir / folder}"))
        assert done(run, "analysis") and done_record(run, "analysis") == before
    result = subprocess.run([sys.executable, stage("features").script, *flags(workdir), "--ood-sets",
                             f"imagefolder:{workdir / 'missing'}"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no folder" in result.stderr


def test_mnist_without_cifar_and_svhn_takes_the_offline_sets_with_a_note(tmp_path, capsys):
    loaded = SimpleNamespace(dataset_name="mnist")
    choice = ood_choice(loaded, SimpleNamespace(data_root=str(tmp_path), ood_sets=None, near_ood=None,
                                                validation_ood=None))
    assert choice.sets == ("photos", "uniform", "mnist_rot90") and choice.near == "mnist_rot90"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: ") and "--ood-sets" in err
    summary = choice_summary(choice)
    assert summary["ood_note"] == choice.note and summary["ood_tags"]["mnist_vflip"] == "mnist_vflip"


def test_long_folder_names_give_short_distinct_tags():
    deep = "imagefolder:/" + "/".join(["a_rather_long_folder_name"] * 8)
    assert len(set_tag(deep)) <= 129 and set_tag(deep) != set_tag(deep + "2")
    assert set_tag("uniform") == "uniform"


# ---- reproduce.py ------------------------------------------------------------------------------------------------
def printed(capsys, *argv):
    assert reproduce.main(["--paper", "000", "--print", "--models", "resnet18", "--seeds", "0", *argv]) == 0
    lines = [shlex.split(line)[1:] for line in capsys.readouterr().out.splitlines()]
    return {name: next(line[1:] for line in lines if line[0] == stage(name).script)
            for name in ("analysis", "features", "kernels")}


def test_full_grid_measures_at_the_papers_sizes_and_passes_the_ood_choice(capsys):
    argv = printed(capsys, "--full", "--traindata", "cifar10", "--ood-sets", "imagefolder:/data/textures", "svhn",
                   "--near-ood", "svhn")
    analysis = analyzing.parse_args(argv["analysis"])
    assert (analysis.batchsize, analysis.num_grams, analysis.num_stability) == (128, 10000, 10000)
    assert analysis.ratios == 53 and analysis.stability_variants == "every" and not analysis.norm0_corner_bug
    for parsed in (analysis, features.parse_args(argv["features"])):
        assert parsed.ood_sets == ["imagefolder:/data/textures", "svhn"] and parsed.near_ood == "svhn"
        assert parsed.validation_ood is None and parsed.batchsize == 128
    assert "--ood-sets" not in argv["kernels"]
    kernels.parse_args(argv["kernels"])
    demo = analyzing.parse_args(printed(capsys)["analysis"])
    demo_caps = (demo.ratios, demo.max_samples, demo.num_grams, demo.num_stability, demo.ood_sets)
    assert demo_caps == (6, 150, 150, 50, None)
