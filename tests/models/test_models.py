"""models/: every registered architecture (shapes, analysis-layer counts and order, width), seed000's VGG13 and
ResNet-18 against torchvision's own modules, akamaster's ResNet-20 checkpoints, load_weights errors, and the
generic analysis-layer rule on torchvision models."""
import pytest
import torch
import torchvision
from torch import nn

from models import build_model, list_models
from models.layers import analysis_layers
from models.weights import load_weights
from utils.errors import ToolkitError
from utils.io import save_torch
from utils.taps import LayerTaps

# analysis weight layers per architecture (seed000 §5, seed003 §3, seed004 §3 and §2.10)
LAYER_COUNTS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet20": 20, "vgg11": 9, "vgg13": 11,
                "vgg16": 14, "vgg19": 17, "vgg11_nobn": 9, "vgg13_nobn": 11, "vgg16_nobn": 14, "vgg19_nobn": 17,
                "lenet": 5, "alexnet": 8, "fcn2": 2, "fcn4": 4, "fcn6": 6, "efficientnet_b0": 49,
                "rainbow_mlp": 3, "rainbow_cnn": 3,   # seed002 §7: 3 linear layers; 2 convs and the classifier
                "scattering": 9, "scattering4": 5,    # seed002 §3: one 1x1 conv per block, then the classifier
                "scattering4_norm": 5,                # seed002 §3: scattering4 with N (a toolkit extra)
                "scattering_skip": 9,                 # seed002 §3: the complex skip variant of the J8 net
                "cnn1d": 6}                           # seed004 §2.12: ceil(log2 32) = 5 blocks, then the readout
NUM_CLASSES = 7


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def call_order(model: nn.Module, x: torch.Tensor) -> tuple[list[nn.Module], list[torch.Tensor], torch.Tensor]:
    """(weight modules in the order they ran, their inputs in that order, output) of one eval forward pass."""
    order, inputs = [], []

    def hook(module, args, output):
        order.append(module)
        inputs.append(args[0])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        output = model.eval()(x)
    for handle in handles:
        handle.remove()
    return order, inputs, output


def test_the_registry_holds_every_architecture_of_the_papers():
    assert set(LAYER_COUNTS) == set(list_models())
    assert {"vgg13bn", "vgg13_bn"} <= set(list_models(aliases=True)) - set(list_models())


def test_unknown_model_is_a_one_line_error_listing_the_names():
    with pytest.raises(ToolkitError) as err:
        build_model("resnet1000", 10)
    assert "\n" not in str(err.value) and all(name in str(err.value) for name in list_models())


@pytest.mark.parametrize("name", list_models())
def test_forward_shape_layer_count_and_order(name):
    """(2, 3, 32, 32) -> (2, nc); weight_layers() lists exactly the main-path conv/linear modules in the order
    they run; layer 0 is the image, the last one the 2-D classifier input; width scales the parameters."""
    torch.manual_seed(0)
    model = build_model(name, NUM_CLASSES, width=0.25)
    x = torch.randn(2, 3, 32, 32)
    order, inputs, output = call_order(model, x)
    layers = model.weight_layers()
    assert output.shape == (2, NUM_CLASSES)
    assert len(layers) == LAYER_COUNTS[name]
    side_paths = [m for m in order if m not in layers]  # what runs but is not an analysis layer
    assert [m for m in order if m in layers] == layers
    assert all(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in side_paths)  # shortcut / SE only
    first_is_image = torch.equal(inputs[0].flatten(1), x.flatten(1))
    assert (first_is_image or name.startswith("scattering")) and inputs[order.index(layers[-1])].dim() == 2  # the
    # scattering nets' first learned layer sees the standardised wavelet modulus (seed002 §3), not the image
    assert n_params(build_model(name, NUM_CLASSES, width=0.5)) > n_params(model) > 0


@pytest.mark.parametrize("name", list_models())
def test_one_channel_28x28_inputs_of_twopoints_and_mnist(name):
    model = build_model(name, 1, in_channels=1, width=0.25, image_size=28).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 1)


def test_seed000_layer_shapes_of_resnet18_and_vgg13():
    """seed000 §5: the inputs of the weight layers at width 1 (C, H, W), and the 512-d GAP vector last."""
    x = torch.randn(1, 3, 32, 32)
    resnet = build_model("resnet18", 10).eval()
    with LayerTaps(resnet.weight_layers()) as taps, torch.no_grad():
        resnet(x)
    assert [tuple(t.shape[1:]) for t in taps.values] == (
        [(3, 32, 32)] + [(64, 32, 32)] * 5 + [(128, 16, 16)] * 4 + [(256, 8, 8)] * 4 + [(512, 4, 4)] * 3 + [(512,)])
    vgg = build_model("vgg13", 10).eval()
    with LayerTaps(vgg.weight_layers()) as taps, torch.no_grad():
        vgg(x)
    assert [tuple(t.shape[1:]) for t in taps.values] == [
        (3, 32, 32), (64, 32, 32), (64, 16, 16), (128, 16, 16), (128, 8, 8), (256, 8, 8), (256, 4, 4),
        (512, 4, 4), (512, 2, 2), (512, 2, 2), (512,)]


class Seed000VGG(nn.Module):
    """seed000 §4 built from torchvision: vgg13_bn's features, avgpool -> AdaptiveAvgPool2d(1), one Linear."""

    def __init__(self, num_classes: int):
        super().__init__()
        vgg = torchvision.models.vgg
        self.features = vgg.make_layers(vgg.cfgs["B"], batch_norm=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def seed000_resnet18(num_classes: int) -> nn.Module:
    """seed000 §4: torchvision resnet18 with a 3x3 stride-1 conv1, no max-pool, fc = Linear(512, nc)."""
    net = torchvision.models.resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


@pytest.mark.parametrize("name, reference", [("vgg13", Seed000VGG), ("resnet18", seed000_resnet18)])
def test_seed000_checkpoints_of_the_torchvision_construction_load_and_compute_the_same(tmp_path, name, reference):
    """seed000 saved {"net": DataParallel state dict} of torchvision-built nets; ours have the same keys,
    shapes and function (eval mode, BN statistics randomised so that they matter)."""
    torch.manual_seed(0)
    theirs = reference(10)
    for module in theirs.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    path = save_torch(tmp_path / "ckpt-1200.pth", {"net": {f"module.{k}": v for k, v in theirs.state_dict().items()},
                                                    "optimizer": {}, "scheduler": {}})
    ours = load_weights(build_model(name, 10), path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs.eval()(x), rtol=1e-5, atol=1e-5)
    assert n_params(ours) == n_params(theirs)


def test_resnet18_init_is_seed000s():
    """seed000 §4: torchvision's kaiming-normal fan_out init in the blocks (std sqrt(2 / (64 * 9)) in layer1),
    PyTorch's default for the replaced conv1 (uniform, std 1 / sqrt(3 * 27))."""
    torch.manual_seed(0)
    model = build_model("resnet18", 10)
    assert model.layer1[0].conv1.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.03)
    assert model.layer2[0].downsample[0].weight.std().item() == pytest.approx((2 / 128) ** 0.5, rel=0.03)
    assert model.conv1.weight.abs().max().item() <= 27 ** -0.5
    assert model.conv1.weight.std().item() == pytest.approx((3 * 27) ** -0.5, rel=0.1)


def test_resnet20_is_akamasters():
    """seed003 §3: 269,722 parameters and 97 checkpoint tensors for 10 classes; option-A shortcut = subsample by
    2 and 8 + 8 zero channels (16 -> 32); kaiming-normal fan_in init (std sqrt(2 / (64 * 9)) in layer3)."""
    torch.manual_seed(0)
    model = build_model("resnet20", 10)
    assert n_params(model) == 269_722
    assert len([k for k in model.state_dict() if "num_batches_tracked" not in k]) == 97
    assert model.layer3[1].conv1.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.03)
    x = torch.randn(2, 16, 32, 32)
    shortcut = model.layer2[0].shortcut(x)
    assert shortcut.shape == (2, 32, 16, 16)
    assert torch.equal(shortcut[:, 8:24], x[:, :, ::2, ::2])
    assert not shortcut[:, :8].any() and not shortcut[:, 24:].any()


def test_resnet20_loads_an_akamaster_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20", 10)
    state = {f"module.{k}": v for k, v in model.state_dict().items() if "num_batches_tracked" not in k}
    path = save_torch(tmp_path / "resnet20-12fca82f.th", {"best_prec1": 91.7, "state_dict": state})
    fresh = load_weights(build_model("resnet20", 10), path).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), model.eval()(x))


def test_load_weights_errors_name_the_problem(tmp_path):
    model = build_model("resnet20", 10, width=0.25)
    good = save_torch(tmp_path / "ok.pt", {"model": model.state_dict()})
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ToolkitError, match="is not a readable checkpoint"):
        load_weights(model, truncated)
    wrong_keys = save_torch(tmp_path / "keys.pt", {"state_dict": {"conv9.weight": torch.zeros(1)}})
    with pytest.raises(ToolkitError, match=r"missing: conv1\.weight.*unexpected: conv9\.weight"):
        load_weights(model, wrong_keys)
    with pytest.raises(ToolkitError, match=r"wrong shape: conv1\.weight \(4, 3, 3, 3\) in the file vs \(8, 3, 3, 3\)"):
        load_weights(build_model("resnet20", 10, width=0.5), good)
    with pytest.raises(ToolkitError, match="holds no state dict"):
        load_weights(model, save_torch(tmp_path / "list.pt", [1, 2, 3]))
    with pytest.raises(ToolkitError, match="missing checkpoint"):
        load_weights(model, tmp_path / "absent.pt")


def test_generic_rule_on_torchvision_resnet18_gives_our_18_layers():
    """DESIGN.md "Layers": traced conv/linear call order minus downsample convs; same names as our resnet18."""
    x = torch.zeros(1, 3, 32, 32)
    theirs, _ = analysis_layers(torchvision.models.resnet18(num_classes=10), x)
    ours, _ = analysis_layers(build_model("resnet18", 10, width=0.25), x)
    assert len(theirs) == 18 and theirs == ours
    assert theirs[:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"] and theirs[-1] == "fc"
    assert not any("downsample" in name for name in theirs)


class TwoPaths(nn.Module):
    """A module without weight_layers(): `body` runs twice, a `shortcut` conv and an unused `spare` conv."""

    def __init__(self):
        super().__init__()
        self.body, self.shortcut, self.spare = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        return self.head((self.body(self.body(x)) + self.shortcut(x)).mean((2, 3)))


def test_generic_rule_keeps_first_calls_and_drops_shortcut_and_unused_modules():
    model = TwoPaths()
    names, modules = analysis_layers(model, torch.zeros(1, 2, 4, 4))
    assert names == ["body", "head"] and modules == [model.body, model.head]
    assert model.training  # the trace runs in eval mode and restores the mode


def test_generic_rule_on_a_wrapped_registry_model_equals_its_weight_layers():
    model = build_model("resnet18", 10, width=0.25)
    names, traced = analysis_layers(nn.Sequential(model), torch.zeros(1, 3, 32, 32))
    assert traced == model.weight_layers() and all(name.startswith("0.") for name in names)


def test_mean_field_fcn_scalings():
    """seed004 §2.10: hidden ReLU(x W^T / sqrt(d_in) + b), last x W^T / d_in, weights and biases N(0, 1)."""
    torch.manual_seed(0)
    model = build_model("fcn2", 10, width=0.5)
    first, last = model.weight_layers()
    assert (first.out_features, last.bias) == (32, None)
    x = torch.randn(4, 3, 32, 32)
    hidden = torch.relu(x.flatten(1) @ first.weight.T / (3 * 32 * 32) ** 0.5 + first.bias)
    torch.testing.assert_close(model(x), hidden @ last.weight.T / 32)
    assert first.weight.std().item() == pytest.approx(1, abs=0.02)
    assert first.bias.std().item() == pytest.approx(1, abs=0.3)


def test_lenet_and_alexnet_flatten_sizes():
    """seed004 §3: LeNet's fc1 takes 400 inputs at 32x32 and 256 at 28x28; AlexNet's first Linear 256 * 2 * 2."""
    assert build_model("lenet", 10).fc1.in_features == 400
    assert build_model("lenet", 1, in_channels=1, image_size=28).fc1.in_features == 256
    assert build_model("alexnet", 10, width=0.25).classifier[1].in_features == 64 * 2 * 2
    with pytest.raises(ToolkitError, match="at least 16x16"):
        build_model("lenet", 10, image_size=8)


def test_torchvision_models_by_name_load_local_state_dicts(tmp_path):
    """Any torchvision classifier by name ("torchvision:<arch>"), its own state-dict files, module.-prefixed."""
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=5).eval()
    path = save_torch(tmp_path / "resnet18.pth", {f"module.{k}": v for k, v in reference.state_dict().items()})
    model = load_weights(build_model("torchvision:resnet18", 5, image_size=32), path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert len(model.weight_layers()) == 18
    with pytest.raises(ToolkitError, match="unknown torchvision model"):
        build_model("torchvision:notanet", 5)


@pytest.mark.parametrize("name", ["resnet18", "vgg11", "resnet20"])
def test_deterministic_pooling_replaces_global_adaptive_pooling_by_a_mean_with_the_same_outputs(name):
    from models.layers import GlobalMeanPool, deterministic_pooling
    torch.manual_seed(0)
    model = build_model(name, 10, width=0.25).eval()
    x = torch.randn(3, 3, 32, 32)
    before, keys = model(x), list(model.state_dict())
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())
    deterministic_pooling(model)
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())
    assert sum(isinstance(m, GlobalMeanPool) for m in model.modules()) == 1
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
    # a pooling to another size is left alone (its backward has no plain-mean twin)
    torchvision_like = nn.Sequential(nn.AdaptiveAvgPool2d((7, 7)))
    assert isinstance(deterministic_pooling(torchvision_like)[0], nn.AdaptiveAvgPool2d)
