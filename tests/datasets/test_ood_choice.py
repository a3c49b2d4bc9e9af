"""OOD sets of the user's choosing (datasets.ood_choice): defaults, the offline stand-in for MNIST, imagefolder:PATH
folders read as class-less sets, and one-line errors for bad input."""
import numpy as np
import pytest
import torch
from PIL import Image

from datasets import build_dataset
from datasets.ood_choice import build_ood_set, choose_ood
from utils.errors import ToolkitError


def write_images(folder, count, size=32, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)
    for index, image in enumerate(pixels):
        Image.fromarray(image).convert(mode).save(folder / f"{index:03d}.png")
    return pixels


def test_defaults_are_the_papers(tmp_path):
    choice = choose_ood("digits", tmp_path)
    assert choice.sets == ("photos", "digits_rot90", "uniform") and choice.near == "digits_rot90"
    assert choice.validation == "digits_vflip" and choice.note == ""
    assert choose_ood("twopoints", tmp_path) is None


def test_mnist_without_cifar_and_svhn_uses_the_offline_sets_and_says_why(tmp_path):
    choice = choose_ood("mnist", tmp_path)
    assert choice.sets == ("photos", "uniform", "mnist_rot90") and choice.near == "mnist_rot90"
    assert choice.validation == "mnist_vflip"
    assert "cifar-10-batches-py" in choice.note and "--ood-sets" in choice.note


def test_cifar10_without_files_is_a_one_line_error_naming_the_files_and_the_flag(tmp_path):
    with pytest.raises(ToolkitError) as err:
        choose_ood("cifar10", tmp_path)
    assert "\n" not in str(err.value) and "test_32x32.mat" in str(err.value) and "--ood-sets" in str(err.value)


def test_a_folder_is_read_as_a_classless_set_pixel_for_pixel(tmp_path):
    pixels = write_images(tmp_path / "textures" / "sub", 5)
    name = f"imagefolder:{tmp_path / 'textures'}"
    choice = choose_ood("digits", tmp_path, sets=[name, "uniform"], near="uniform")
    assert choice.sets == (name, "uniform") and choice.validation == "digits_vflip"
    assert choice.flags() == {"ood_sets": [name, "uniform"], "near_ood": "uniform", "validation_ood": "digits_vflip"}
    data = build_ood_set(name, tmp_path, 32, 3)
    assert data.images.shape == (5, 3, 32, 32) and (data.labels == -1).all()
    np.testing.assert_array_equal((data.images * 255).round().byte().permute(0, 2, 3, 1).numpy(), pixels)
    grey = build_ood_set(name, tmp_path, 32, 1)
    expected = np.stack([np.asarray(Image.fromarray(p).convert("L")) for p in pixels])
    np.testing.assert_array_equal((grey.images[:, 0] * 255).round().byte().numpy(), expected)


def test_registered_sets_are_relabelled_and_rotations_are_exact(tmp_path):
    data = build_ood_set("digits_rot90", tmp_path, 32, 3)
    test = build_dataset("digits", "test").images
    assert torch.equal(data.images, torch.rot90(test, 1, dims=(2, 3))) and (data.labels == -1).all()


def test_a_folder_of_other_sizes_is_resized_and_centre_cropped_as_openood_does(tmp_path):
    """OpenOOD's test transform: Resize(32) of the shorter side, CenterCrop(32), on the PIL image; 32x32 images kept."""
    from torchvision import transforms

    write_images(tmp_path / "textures" / "a", 2, size=32)
    rng = np.random.default_rng(1)
    wide = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)               # 56 wide, 40 high
    Image.fromarray(wide).save(tmp_path / "textures" / "b.png")
    name = f"imagefolder:{tmp_path / 'textures'}"
    choice = choose_ood("digits", tmp_path, sets=[name, "uniform"], near="uniform")
    assert "resized (shorter side, bilinear) and centre-cropped" in choice.note and name in choice.note
    data = build_ood_set(name, tmp_path, 32, 3)
    assert data.images.shape == (3, 3, 32, 32) and data.extras["resized"] == 1
    expected = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32), transforms.PILToTensor()])(
        Image.fromarray(wide))
    assert torch.equal((data.images[2] * 255).round().byte(), expected)   # b.png sorts after a/


@pytest.mark.parametrize("case, message", [
    ("missing", "no folder"), ("empty", "no image files"), ("near", "must be one of"),
    ("validation", "never reported"), ("unknown", "unknown OOD set"), ("self", "in-distribution set")])
def test_bad_choices_are_one_line(tmp_path, case, message):
    folder = tmp_path / "f"
    if case == "empty":
        folder.mkdir()
    sets = {"missing": [f"imagefolder:{folder}"], "empty": [f"imagefolder:{folder}"],
            "near": ["uniform"], "validation": ["uniform", "digits_vflip"],
            "unknown": ["nonesuch"], "self": ["digits"]}[case]
    with pytest.raises(ToolkitError) as err:
        choice = choose_ood("digits", tmp_path, sets=sets, near="photos" if case == "near" else None)
        build_ood_set(choice.sets[0], tmp_path, 32, 3)
    assert message in str(err.value) and "\n" not in str(err.value)
