"""stability.py beyond the basic modes (issue 17): the fx nodes of §2.4, batch-statistics BatchNorm at init, the
channel shuffles 1 and 2 against hand-made permutations, the fresh init net, the twopoints one-pixel move, the flags
--mean_stability, --noise_magnitude and --interp, the original's nodes (--nodes original, issue 28) and the node
groups that bound the memory of the init batch (--node_memory, issue 27)."""
import copy
import operator

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.feature_extraction import get_graph_node_names

import stability
from models import build_model
from pipeline.contract import STABILITY_MODES, load
from utils.rundir import RunDir
from utils.taps import NodeTaps

ORIGINAL_DROPPED = ("size", "sub", "floordiv", "numel", "pow")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, trained_run):
    workdir = tmp_path_factory.mktemp("stability_modes")
    trained_run(workdir, "vgg11", "digits", 0, "--width", "0.25", "--epochs", "2")
    trained_run(workdir, "lenet", "twopoints", 0, "--ptr", "256", "--epochs", "1")
    trained_run(workdir, "lenet", "digits", 0, "--width", "0.5", "--epochs", "1", "--recipe", "seed004")
    return workdir


def args_of(workdir, *extra, model="vgg11", data="digits"):
    twopoints = ["--ptr", "256"] if data == "twopoints" else []   # the twopoints run lives in lenet@ptr256/
    return stability.parse_args(["--model-name", model, "--traindata", data, "--workdir", str(workdir), "--device",
                                 "cpu", *twopoints, *extra])


def measure(workdir, *extra, model="lenet", data="digits"):
    assert stability.main(["--model-name", model, "--traindata", data, "--workdir", str(workdir), "--device", "cpu",
                           "--P", "40", "--force", *extra]) == 0


def results(workdir, mode, model="lenet", data="digits"):
    run, name = RunDir.of(workdir, data, model, 0), STABILITY_MODES[mode]
    return load(run, name, "stability"), load(run, name, "summary")


# ---------------------------------------------------------------------------------------------------- nodes (§2.4)

def original_nodes(model):
    """The nodes the original kept: every fx node but the input and its size/view/squeeze/dropout names."""
    _, names = get_graph_node_names(model)
    return [n for n in names[1:] if n not in ("size", "view", "squeeze", "dropout", "flatten")
            and not any(part in n for part in ORIGINAL_DROPPED)]


def nodes_of(name, **kwargs):
    torch.manual_seed(0)
    model = build_model(name, 10, width=0.25, **kwargs).eval()
    taps = NodeTaps(model, by_layer=True)
    x = torch.randn(3, kwargs.get("in_channels", 3), 32, 32)
    found = taps(x)
    assert list(found) == taps.names and taps.names[-1] == "output"
    torch.testing.assert_close(found["output"], model(x), rtol=0, atol=0)
    again = taps(x)                                                                   # the rebuilt extractor
    assert list(again) == taps.names and all(torch.equal(again[k], found[k]) for k in found)
    return model, found


def test_resnet_nodes_hold_the_residual_adds_and_the_functional_relus():
    model, found = nodes_of("resnet18")
    names = list(found)
    for block in ("layer1.0", "layer2.0", "layer4.1"):
        assert [f"{block}.bn2", f"{block}.add", f"{block}.relu_1"] == [n for n in names if n.startswith(block)
                                                                        and n.split(".")[-1] in
                                                                        ("bn2", "add", "relu_1")]
    assert "relu" in names and "layer2.0.downsample.0" in names and "layer1.0.downsample" not in names  # Identity
    original = original_nodes(model)
    identities = [n for n, m in model.named_modules() if isinstance(m, nn.Identity)]
    assert names[:-1] == [n for n in original if n not in identities][:-1]          # the original's, no Identity
    torch.testing.assert_close(found["layer1.0.add"], found["layer1.0.bn2"] + found["relu"])   # x + F(x)
    torch.testing.assert_close(found["layer1.0.relu_1"], found["layer1.0.add"].relu())


def test_lenet_nodes_are_the_post_conv_relus_and_every_layer():
    _, found = nodes_of("lenet")
    assert list(found) == ["conv1", "relu", "pool", "conv2", "relu_1", "pool_1", "fc1", "relu_2", "fc2", "relu_3",
                           "output"]
    torch.testing.assert_close(found["relu"], found["conv1"].relu())


def test_vgg_nodes_have_no_global_pool_and_in_place_relus_keep_the_conv_output():
    model, found = nodes_of("vgg11_nobn")
    assert "avgpool" not in found and "pad" not in found and list(found)[0] == "features.0"
    assert found["features.0"].min() < 0 and torch.equal(found["features.1"], found["features.0"].relu())
    assert isinstance(model.features[1], nn.ReLU)


def hooked_outputs(model, x):
    """A hand-built in-place extractor: forward hooks keep the output tensor of every leaf module, in call order, as
    the original's feature extractor returns it (an in-place ReLU later overwrites the conv/BN output it was given)."""
    found, handles = [], []
    for name, module in model.named_modules():
        if not list(module.children()):
            handles.append(module.register_forward_hook(lambda m, i, out, name=name: found.append((name, out))))
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return found


def test_original_nodes_are_an_in_place_extractor_s_values_and_indices():
    """--nodes original on a VGG with BN and in-place ReLUs, on 28x28 one-channel inputs (twopoints' ZeroPad2d):
    every leaf module's output, in order, post-ReLU where an in-place ReLU follows, pad and global pool kept."""
    torch.manual_seed(0)
    model = build_model("vgg11", 1, in_channels=1, width=0.25, image_size=28).double().eval()
    x = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    expected = hooked_outputs(model, x)
    assert [name for name, _ in expected][:2] == ["pad", "features.0"] and expected[-2][0] == "avgpool"
    taps = NodeTaps(model, by_layer=True, nodes="original")
    found = taps(x)
    assert list(found) == [name for name, _ in expected[:-1]] + ["output"]      # the same nodes at the same indices
    for (name, value), node in zip(expected, found):
        assert torch.equal(found[node], value), name
    assert found["features.1"].min() >= 0 and torch.equal(found["features.1"], found["features.2"])  # BN: post-ReLU
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    ours = NodeTaps(copy.deepcopy(model), by_layer=True)(x)
    assert list(ours)[0] == "features.0" and len(ours) == len(found) - 2 and ours["features.0"].min() < 0


def test_node_groups_bound_the_memory_and_leave_the_init_numbers_unchanged(workdir):
    """At init the BN batch is all --P probes (§2.6); --node_memory measures the nodes in groups, each group from its
    own passes over the whole batch: the same numbers as one group."""
    model = build_model("lenet", 10, width=0.25).eval()
    taps = NodeTaps(model, by_layer=True)
    taps.settle(torch.randn(2, 3, 32, 32))
    assert [len(g) for g in taps.groups(10, 1.0)] == [1] * len(taps.names)
    assert taps.groups(10, 1e12) == [taps.names]
    sizes = [3 * 10 * taps.sample_bytes[n] for n in taps.names]
    budget = sum(sizes[:3])
    assert taps.groups(10, budget)[0] == taps.names[:3]
    runs = {}
    for memory in ("4", "1e-9"):
        measure(workdir, "--init", "--by_layer", "--node_memory", memory, model="vgg11")
        runs[memory] = results(workdir, "init", model="vgg11")
    (whole, summary), (grouped, summary_grouped) = runs["4"], runs["1e-9"]
    assert list(whole["nodes"]) == list(grouped["nodes"]) and len(whole["nodes"]) == 30
    np.testing.assert_array_equal(whole["dims"], grouped["dims"])
    for key in ("D", "G", "R", "den"):
        np.testing.assert_allclose(grouped[key], whole[key], rtol=1e-12)
    assert summary["probe_accuracy"] == summary_grouped["probe_accuracy"]
    measure(workdir, "--init", "--by_layer", "--batchsize", "20", model="vgg11")   # another BN batch: other numbers
    assert not np.allclose(results(workdir, "init", model="vgg11")[0]["R"], whole["R"], rtol=1e-6)


def test_mean_field_fcn_layers_are_single_nodes():
    _, found = nodes_of("fcn2")
    assert list(found) == ["layers.0", "relu", "output"]


def test_in_place_graph_ops_are_made_out_of_place():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2, 1)

        def forward(self, x):
            y = self.conv(x)
            z = torch.nn.functional.relu(y, inplace=True)
            z += 1
            return self.fc(z.mul_(2).mean((2, 3)))

    taps = NodeTaps(InPlace().eval(), by_layer=True)
    found = taps(torch.randn(4, 1, 8, 8))
    assert list(found) == ["conv", "relu", "add", "mul_", "mean", "output"]
    assert found["conv"].min() < 0 and torch.equal(found["add"], found["relu"] + 1)
    assert torch.equal(found["mul_"], 2 * found["add"])
    extractor = taps._extractors[tuple(taps.names)]
    assert all(node.target not in (operator.iadd, "mul_") for node in extractor.eval_graph.nodes)


# ---------------------------------------------------------------------------------------------------- the networks

def test_init_batchnorm_normalises_with_the_batch_statistics(workdir):
    """§2.6: the epoch-0 net's BN has no running statistics and uses those of the batch it sees (biased var)."""
    loaded = stability.open_network(args_of(workdir, "--init"), torch.device("cpu"))
    bns = [m for m in loaded.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not bn.track_running_stats and bn.running_mean is None and bn.running_var is None
                       for bn in bns)
    seen = {}
    handle = bns[3].register_forward_hook(lambda m, i, o: seen.update(inputs=i[0].clone(), outputs=o.clone()))
    x = loaded.inputs(torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        loaded.model(x)
        first = seen["outputs"].clone()
        loaded.model(x[:5])
    handle.remove()
    inputs = seen["inputs"]
    mean, var = inputs.mean((0, 2, 3), keepdim=True), inputs.var((0, 2, 3), unbiased=False, keepdim=True)
    by_hand = (inputs - mean) / (var + bns[3].eps).sqrt() * bns[3].weight[None, :, None, None] \
        + bns[3].bias[None, :, None, None]
    torch.testing.assert_close(seen["outputs"], by_hand, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(seen["outputs"], first[:5])                              # another batch, other stats
    assert not loaded.model.training


@pytest.mark.parametrize("mode", [1, 2])
def test_shuffled_net_is_a_hand_made_channel_permutation_of_the_trained_weights(workdir, mode):
    """§2.5: new[o, i] = w[p_out[o], p_in[i]] for every 4-D weight (p_out the identity in mode 1), one p_in (then one
    p_out) drawn per layer in state-dict order from --seed; everything else untouched."""
    trained = stability.open_network(args_of(workdir), torch.device("cpu")).model.state_dict()
    shuffled = stability.open_network(args_of(workdir, "--shuffle_channels", str(mode)),
                                      torch.device("cpu")).model.state_dict()
    generator = torch.Generator().manual_seed(0)
    convs = 0
    for name, w in trained.items():
        new = shuffled[name]
        if w.dim() != 4:
            assert torch.equal(new, w), name
            continue
        convs += 1
        p_in = torch.randperm(w.shape[1], generator=generator).tolist()
        p_out = torch.randperm(w.shape[0], generator=generator).tolist() if mode == 2 else list(range(w.shape[0]))
        for o in range(w.shape[0]):
            for i in range(w.shape[1]):
                assert torch.equal(new[o, i], w[p_out[o], p_in[i]]), (name, o, i)
        assert not torch.equal(new, w)
    assert convs == 8


def test_fresh_init_is_a_new_seeded_draw_of_the_recipe_init(workdir):
    """--init fresh: not the epoch-0 checkpoint, the same for the same --seed, PyTorch's default law (seed004)."""
    epoch0 = stability.open_network(args_of(workdir, "--init", model="lenet"), torch.device("cpu")).model
    fresh = stability.open_network(args_of(workdir, "--init", "fresh", model="lenet"), torch.device("cpu"))
    again = stability.open_network(args_of(workdir, "--init", "fresh", model="lenet"), torch.device("cpu"))
    assert fresh.checkpoint == "fresh" and fresh.model.conv1.weight.dtype == torch.float64
    assert torch.equal(fresh.model.conv1.weight, again.model.conv1.weight)
    assert not torch.equal(fresh.model.conv1.weight, epoch0.conv1.weight)
    bound = 1 / (epoch0.conv1.weight[0].numel()) ** 0.5                               # U(-1/sqrt(fan_in), ..)
    assert fresh.model.conv1.weight.abs().max() <= bound
    assert fresh.model.conv1.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.25)


def test_twopoints_move_displaces_each_active_pixel_by_exactly_one(workdir):
    loaded = stability.open_network(args_of(workdir, "--P", "500", model="lenet", data="twopoints"),
                                    torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    probes = stability.draw_probes(args_of(workdir, "--P", "500", model="lenet", data="twopoints"), loaded,
                                   generator)
    moved = stability.deform(probes, args_of(workdir, model="lenet", data="twopoints"), generator)
    d, value, checked = 28, 28 * 28 / 2, 0
    for image, after, points in zip(probes.images, moved, probes.points):
        before = torch.nonzero(image[0]).tolist()
        active = torch.nonzero(after[0]).tolist()
        interior = all(0 < c < d - 1 for p in points.tolist() for c in p)
        apart = (points[0] - points[1]).abs().max() > 2
        if not (interior and apart):
            continue
        checked += 1
        assert sorted(map(tuple, before)) == sorted(map(tuple, points.tolist()))
        assert len(active) == 2 and torch.all(after[0][after[0] != 0] == value)
        steps = sorted(sorted(max(abs(p[0] - q[0]), abs(p[1] - q[1])) for p in before) for q in active)
        assert [s[0] for s in steps] == [1, 1] and all(s[1] >= 2 for s in steps)     # each moved by exactly one
        assert sorted(tuple(min(before, key=lambda p: max(abs(p[0] - q[0]), abs(p[1] - q[1])))) for q in active) \
            == sorted(map(tuple, before))                                              # one moved pixel per point
    assert checked > 300


# ---------------------------------------------------------------------------------------------------- flags

def test_median_noise_magnitude_and_gaussian_interp_flags(workdir):
    measure(workdir, "--by_layer")
    base, summary = results(workdir, "trained")
    assert summary["statistic"] == "mean" and summary["interp"] == "linear" and summary["noise_magnitude"] is None
    measure(workdir, "--by_layer", "--mean_stability", "0")
    median, summary = results(workdir, "trained")
    assert summary["statistic"] == "median"
    np.testing.assert_allclose(median["den"], base["den"], rtol=1e-12)                 # the pair mean stays
    assert not np.allclose(median["D"], base["D"]) and np.all(np.isfinite(median["R"]))
    measure(workdir, "--by_layer", "--noise_magnitude", "3")
    fixed, summary = results(workdir, "trained")
    np.testing.assert_allclose(fixed["D"], base["D"], rtol=1e-12)                      # same tau, other eta
    assert summary["noise_magnitude"] == 3 and not np.allclose(fixed["G"], base["G"])
    measure(workdir, "--interp", "gaussian")
    gaussian, summary = results(workdir, "trained")
    assert summary["interp"] == "gaussian" and gaussian["D"][0] != pytest.approx(base["D"][-1])


def test_noise_magnitude_must_be_minus_one_or_positive(workdir):
    with pytest.raises(SystemExit):
        args_of(workdir, "--noise_magnitude", "0")
    with pytest.raises(SystemExit):
        args_of(workdir, "--init", "--shuffle_channels", "2")
    assert stability.stage_of(args_of(workdir, "--shuffle_channels", "2")) == STABILITY_MODES["shuffled2"]
    assert stability.stage_of(args_of(workdir, "--init")) == STABILITY_MODES["init"]
    assert stability.stage_of(args_of(workdir, "--init", "fresh")) == STABILITY_MODES["fresh"]
