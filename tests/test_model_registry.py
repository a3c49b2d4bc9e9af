"""models/: every registered architecture, analysis-layer counts and shapes, akamaster checkpoints."""
import pytest
import torch
import torchvision

from models import build_model, list_models
from models.layers import analysis_layers
from models.weights import load_weights
from utils.errors import ToolkitError
from utils.io import save_torch
from utils.taps import capture_inputs

LAYER_COUNTS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet20": 20, "vgg11": 9, "vgg13": 11,
                "vgg16": 14, "vgg19": 17, "vgg11_nobn": 9, "vgg13_nobn": 11, "vgg16_nobn": 14, "vgg19_nobn": 17,
                "lenet": 5, "alexnet": 8, "fcn2": 2, "fcn4": 4, "fcn6": 6, "efficientnet_b0": 49}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_every_model_has_a_known_layer_count():
    assert set(LAYER_COUNTS) <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_forward_shape_and_analysis_layers(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, width=0.25).eval()
    x = torch.randn(2, 3, 32, 32)
    inputs, out = capture_inputs(model, model.weight_layers(), x)
    assert out.shape == (2, 7)
    assert all(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.weight_layers())
    if name in LAYER_COUNTS:
        assert len(inputs) == LAYER_COUNTS[name]
    assert torch.equal(inputs[0].reshape(2, -1), x.reshape(2, -1))  # layer 0 is the input image
    assert inputs[-1].dim() == 2  # the last index is the classifier input
    assert n_params(build_model(name, 7, width=0.5)) > n_params(model)  # width scales the channels


@pytest.mark.parametrize("name", ["lenet", "vgg11_nobn", "alexnet", "resnet18"])
def test_one_channel_28x28_inputs_of_twopoints(name):
    model = build_model(name, num_classes=1, in_channels=1, width=0.25, image_size=28).eval()
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 1)


def test_seed000_layer_shapes_resnet18_and_vgg13():
    """seed000 §5: the shapes of the inputs of the weight layers at width 1."""
    resnet = build_model("resnet18", 10).eval()
    inputs, _ = capture_inputs(resnet, resnet.weight_layers(), torch.randn(1, 3, 32, 32))
    shapes = [tuple(t.shape[1:]) for t in inputs]
    assert shapes[0] == (3, 32, 32) and shapes[1:6] == [(64, 32, 32)] * 5
    assert shapes[6:10] == [(128, 16, 16)] * 4 and shapes[10:14] == [(256, 8, 8)] * 4
    assert shapes[14:17] == [(512, 4, 4)] * 3 and shapes[17] == (512,)
    vgg = build_model("vgg13", 10).eval()
    inputs, _ = capture_inputs(vgg, vgg.weight_layers(), torch.randn(1, 3, 32, 32))
    assert [tuple(t.shape[1:]) for t in inputs] == [
        (3, 32, 32), (64, 32, 32), (64, 16, 16), (128, 16, 16), (128, 8, 8), (256, 8, 8), (256, 4, 4),
        (512, 4, 4), (512, 2, 2), (512, 2, 2), (512,)]


def test_resnet20_parameter_count_and_akamaster_checkpoint(tmp_path):
    model = build_model("resnet20", 10)
    assert n_params(model) == 269_722
    state = {f"module.{k}": v for k, v in model.state_dict().items() if "num_batches_tracked" not in k}
    path = save_torch(tmp_path / "resnet20-12fca82f.th", {"best_prec1": 91.78, "state_dict": state})
    fresh = load_weights(build_model("resnet20", 10), path).eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(fresh(x), model.eval()(x))


def test_load_weights_errors_name_the_problem(tmp_path):
    model = build_model("resnet20", 10)
    path = save_torch(tmp_path / "other.pt", {"state_dict": {"conv9.weight": torch.zeros(1)}})
    with pytest.raises(ToolkitError, match="conv9.weight"):
        load_weights(model, path)
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(save_torch(tmp_path / "ok.pt", model.state_dict()).read_bytes()[:200])
    with pytest.raises(ToolkitError, match="not a readable checkpoint"):
        load_weights(model, truncated)


def test_unknown_model_lists_the_names():
    with pytest.raises(ToolkitError, match="resnet18"):
        build_model("resnet1000", 10)


def test_generic_rule_on_a_torchvision_model_matches_ours():
    names, modules = analysis_layers(torchvision.models.resnet18(num_classes=10), torch.randn(1, 3, 64, 64))
    assert len(modules) == 18 and names[0] == "conv1" and names[-1] == "fc"
    assert not any("downsample" in n for n in names)


def test_mean_field_fcn_scalings():
    """seed004 §2.10: hidden ReLU(x W / sqrt(d) + b), last x W / d, with N(0, 1) weights."""
    torch.manual_seed(0)
    model = build_model("fcn2", 10, width=0.5)
    first, last = model.weight_layers()
    x = torch.randn(4, 3, 32, 32)
    hidden = torch.relu(x.flatten(1) @ first.weight.T / (3 * 32 * 32) ** 0.5 + first.bias)
    assert torch.allclose(model(x), hidden @ last.weight.T / first.out_features, atol=1e-5)
    assert abs(first.weight.std().item() - 1) < 0.05


def test_torchvision_models_by_name_load_local_state_dicts(tmp_path):
    """Issue 10: any torchvision classifier by name, its own state-dict files, plain or module.-prefixed."""
    reference = torchvision.models.resnet18(num_classes=5).eval()
    path = save_torch(tmp_path / "resnet18.pth", {f"module.{k}": v for k, v in reference.state_dict().items()})
    model = load_weights(build_model("torchvision:resnet18", 5, image_size=64), path).eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(model(x), reference(x))
    assert len(model.weight_layers()) == 18
    with pytest.raises(ToolkitError, match="unknown torchvision model"):
        build_model("torchvision:notanet", 5)
