"""datasets/: digits and its OOD sets, normalisation constants and twopoints (seed004 §2.8); the file readers:
test_dataset_files.py."""
import itertools

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from datasets import (
    build_dataset,
    denormalize,
    has_ood_sets,
    list_datasets,
    near_ood,
    normalization_for,
    normalize,
    ood_sets,
    validation_ood,
)
from datasets.normalization import (
    DIGITS_MEAN,
    DIGITS_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SEED000_CIFAR_MEAN,
    SEED000_CIFAR_STD,
)
from datasets.twopoints import candidate_points, class_pairs, render_points
from utils.errors import ToolkitError

# ---------------------------------------------------------------------------------------------------------------
# digits and its OOD sets


def test_digits_split_sizes_balance_and_range():
    train, test = build_dataset("digits", "train"), build_dataset("digits", "test")
    assert train.images.shape == (1437, 3, 32, 32) and test.images.shape == (360, 3, 32, 32)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert train.num_classes == 10 and train.extras == {}
    for data in (train, test):
        assert data.images.min() == 0 and data.images.max() == 1
        assert torch.equal(data.images[:, 0], data.images[:, 2])  # grey repeated to three channels
    totals = torch.bincount(torch.cat([train.labels, test.labels]))
    assert (torch.bincount(test.labels) - 0.2 * totals).abs().max() <= 1  # stratified 80/20 split


def test_digits_images_are_sklearn_digits_resized_bilinearly():
    """Reference: sklearn's own split of load_digits, /16, resized with interpolate(align_corners=False)."""
    raw = load_digits()
    _, test_index = train_test_split(np.arange(1797), test_size=0.2, random_state=0, stratify=raw.target)
    test_index = np.sort(test_index)
    expected = torch.nn.functional.interpolate(torch.tensor(raw.images[test_index, None] / 16.0, dtype=torch.float32),
                                               size=(32, 32), mode="bilinear", align_corners=False)
    test = build_dataset("digits", "test", channels=1)
    assert test.images.shape == (360, 1, 32, 32)
    torch.testing.assert_close(test.images, expected)
    assert test.labels.tolist() == raw.target[test_index].tolist()


def test_digits_normalisation_constants_are_the_train_statistics():
    images = build_dataset("digits", "train").images.double()
    assert images.mean().item() == pytest.approx(DIGITS_MEAN[0], abs=5e-5)
    assert images.std().item() == pytest.approx(DIGITS_STD[0], abs=5e-5)


@pytest.mark.parametrize("name", ["photos", "digits_rot90", "uniform"])
def test_digits_ood_sets_shapes_and_determinism(name):
    data = build_dataset(name, "test")
    assert data.images.shape == (360, 3, 32, 32) and data.images.dtype == torch.float32
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert torch.equal(data.labels, torch.full((360,), -1)) and data.num_classes == 0
    assert data.mean == DIGITS_MEAN  # evaluated next to digits
    assert torch.equal(data.images, build_dataset(name, "test").images)  # fixed seeds
    assert build_dataset(name, "test", channels=1).images.shape == (360, 1, 32, 32)


def test_digits_ood_contents():
    test = build_dataset("digits", "test").images
    rotated = build_dataset("digits_rot90", "test").images
    assert torch.equal(rotated[7, 0], test[7, 0].T.flip(0))  # 90 degrees counter-clockwise
    uniform = build_dataset("uniform", "test").images
    assert uniform.mean().item() == pytest.approx(0.5, abs=0.01)
    assert uniform.var().item() == pytest.approx(1 / 12, abs=0.005)


def test_photos_are_documented_crops_of_the_sample_images():
    """Replay the documented draws (seed 1234: 360 tops, then 360 lefts) and crop with numpy."""
    from sklearn.datasets import load_sample_images

    grey = [img.astype(np.float64).mean(-1) / 255 for img in load_sample_images().images]  # china, flower
    generator = torch.Generator().manual_seed(1234)
    tops = torch.randint(0, 427 - 64 + 1, (360,), generator=generator)
    lefts = torch.randint(0, 640 - 64 + 1, (360,), generator=generator)
    photos = build_dataset("photos", "test").images
    for i in (0, 1, 359):
        crop = grey[i % 2][tops[i]:tops[i] + 64, lefts[i]:lefts[i] + 64]
        expected = crop.reshape(32, 2, 32, 2).mean((1, 3))  # 2x2 averages
        np.testing.assert_allclose(photos[i, 0].numpy(), expected, atol=1e-6)
    assert np.median(photos.flatten(1).std(1).numpy()) > 0.05  # textured, not flat


def test_ood_sets_and_near_ood_follow_seed000():
    assert ood_sets("cifar10") == ["svhn", "mnist", "cifar100"]
    assert ood_sets("cifar100") == ["cifar10", "svhn", "mnist"]
    assert ood_sets("svhn") == ["cifar10", "mnist", "cifar100"]
    assert ood_sets("mnist") == ["cifar10", "svhn", "cifar100"]
    assert ood_sets("digits") == ["photos", "digits_rot90", "uniform"]
    assert [near_ood(n) for n in ("cifar10", "cifar100", "svhn", "mnist", "digits")] == \
        ["cifar100", "cifar10", "cifar10", "cifar10", "digits_rot90"]
    for bad in (ood_sets, near_ood, validation_ood):
        with pytest.raises(ToolkitError, match="twopoints"):
            bad("twopoints")
    assert set(ood_sets("digits")) | {near_ood("digits")} <= set(list_datasets())
    defined = ("digits", "cifar10", "cifar100", "svhn", "mnist")
    assert all(has_ood_sets(name) for name in defined)  # exactly the sets the three functions accept
    assert not any(has_ood_sets(name) for name in ("twopoints", "imagenet", "imagefolder:/data/x"))


def test_validation_ood_is_the_test_split_upside_down_and_never_reported():
    test, flipped = build_dataset("digits", "test"), build_dataset(validation_ood("digits"), "test")
    assert torch.equal(flipped.images, test.images.flip(2)) and (flipped.labels == -1).all()
    assert (flipped.mean, flipped.std) == (test.mean, test.std)
    assert build_dataset("digits_vflip", "test", channels=1).images.shape == (360, 1, 32, 32)
    for name in ("digits", "cifar10", "cifar100", "svhn", "mnist"):
        assert validation_ood(name) not in ood_sets(name) and validation_ood(name) in list_datasets()
    with pytest.raises(ToolkitError, match="no split"):
        build_dataset("digits_vflip", "train")
    with pytest.raises(ToolkitError, match="validation"):
        validation_ood("twopoints")


def test_bad_names_splits_and_options_are_one_line_errors():
    for call, message in ((lambda: build_dataset("imagenet22k", "train"), "unknown dataset 'imagenet22k'"),
                          (lambda: build_dataset("digits", "val"), "no split 'val'"),
                          (lambda: build_dataset("photos", "train"), "no split 'train'"),
                          (lambda: build_dataset("digits", "train", ptr=3), "no option ptr"),
                          (lambda: build_dataset("cifar10", "train", channels=1), "no option channels"),
                          (lambda: build_dataset("digits", "train", channels=2), "channels must be 1 or 3")):
        with pytest.raises(ToolkitError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# normalisation


def test_normalisation_constants_and_choice():
    assert SEED000_CIFAR_MEAN == (0.4914, 0.4822, 0.4465) and SEED000_CIFAR_STD == (0.2023, 0.1994, 0.2010)
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    for dataset in ("cifar10", "cifar100", "svhn", "mnist"):  # seed000 §4: CIFAR-10's constants for every set
        assert normalization_for(None, dataset) == (SEED000_CIFAR_MEAN, SEED000_CIFAR_STD)
        assert normalization_for("seed004", dataset) == (SEED000_CIFAR_MEAN, SEED000_CIFAR_STD)
    for recipe in ("akamaster", "seed002", "imagenet"):
        assert normalization_for(recipe, "cifar10") == (IMAGENET_MEAN, IMAGENET_STD)
    assert normalization_for(None, "digits") == (DIGITS_MEAN, DIGITS_STD)
    assert normalization_for("akamaster", "twopoints") == ((0.0,), (1.0,))
    with pytest.raises(ToolkitError, match="unknown normalisation"):
        normalization_for("kuangliu", "cifar10")


def test_normalize_is_per_channel_and_keeps_device_and_dtype():
    x = torch.rand(4, 3, 5, 5, dtype=torch.float64)
    out = normalize(x, SEED000_CIFAR_MEAN, SEED000_CIFAR_STD)
    for c in range(3):
        torch.testing.assert_close(out[:, c], (x[:, c] - SEED000_CIFAR_MEAN[c]) / SEED000_CIFAR_STD[c])
    assert out.dtype == torch.float64
    data = build_dataset("digits", "test")
    torch.testing.assert_close(data.normalize(data.images[:2]), (data.images[:2] - 0.3054) / 0.3237)
    back = denormalize(out, SEED000_CIFAR_MEAN, SEED000_CIFAR_STD)     # the inverse, channel by channel
    for c in range(3):
        torch.testing.assert_close(back[:, c], out[:, c] * SEED000_CIFAR_STD[c] + SEED000_CIFAR_MEAN[c])
    torch.testing.assert_close(back, x)


# ---------------------------------------------------------------------------------------------------------------
# twopoints (seed004 §2.8)


def test_twopoints_counts_of_the_spec():
    points, far, close = class_pairs(d=28, xi=14, gap=2)
    assert len(candidate_points(28)) == 756 == len(points)
    assert len(points) * (len(points) - 1) // 2 == 285_390
    assert len(far) == 135_397 and len(close) == 120_767  # dropped: 29,226


def test_twopoints_pairs_match_itertools_order_and_labels():
    """Independent reference: the original's itertools.combinations(itertools.permutations(range(d), 2), 2)."""
    d, xi, gap = 7, 3.0, 1.0
    pairs = np.array(list(itertools.combinations(itertools.permutations(range(d), 2), 2)))  # (M, 2, 2)
    for norm, pbc in (("L2", False), ("Linf", True)):
        delta = np.abs(pairs[:, 0] - pairs[:, 1])
        if pbc:
            delta = np.minimum(delta, d - delta)
        dist = np.sqrt((delta ** 2).sum(1)) if norm == "L2" else delta.max(1)
        points, far, close = class_pairs(d, xi, gap, norm, pbc)
        np.testing.assert_array_equal(points[far], pairs[dist >= xi + gap / 2])
        np.testing.assert_array_equal(points[close], pairs[dist < xi - gap / 2])


def test_twopoints_split_follows_the_original_algorithm():
    """Reference: seed004's TwoPointsDataset written out with torch on the itertools pairs (d=12 to stay fast):
    one generator seeded 123456789 permutes far then close; test = last testsize/2 of each; train pool = the
    rest truncated to the smaller class, far then close; then randperm(2P)[:ptr] under the seed."""
    d, xi, gap, ptr, seed = 12, 5.0, 1.0, 64, 3
    x = torch.tensor(list(itertools.combinations(itertools.permutations(range(d), 2), 2)))  # (M, 2, 2)
    dist = x.diff(dim=-2).abs().squeeze(-2).pow(2).sum(-1).sqrt()
    far, close = x[dist >= xi + gap / 2], x[dist < xi - gap / 2]
    g = torch.Generator()
    g.manual_seed(123456789)
    far, close = far[torch.randperm(len(far), generator=g)], close[torch.randperm(len(close), generator=g)]
    half = 4 * ptr // 2
    test = build_dataset("twopoints", "test", d=d, xi=xi, gap=gap, ptr=ptr)
    assert torch.equal(test.extras["points"], torch.cat([far[-half:], close[-half:]]))
    pool = min(len(far), len(close)) - half
    coords = torch.cat([far[:pool], close[:pool]])
    targets = torch.cat([torch.zeros(pool), torch.ones(pool)]).long()
    pick = torch.randperm(2 * pool, generator=torch.Generator().manual_seed(seed))[:ptr]
    train = build_dataset("twopoints", "train", d=d, xi=xi, gap=gap, ptr=ptr, seed=seed)
    assert torch.equal(train.extras["points"], coords[pick]) and torch.equal(train.labels, targets[pick])
    image = torch.zeros(d, d)
    image[coords[pick[0], :, 0], coords[pick[0], :, 1]] = 1
    torch.testing.assert_close(train.images[0, 0], image / (2 / d ** 2))  # +1 at the points, divided by 2/d^2


def test_render_points_places_value_d2_over_2_so_the_mean_pixel_is_one():
    points = torch.tensor([[[0, 1], [5, 3]], [[2, 2], [2, 2]]])
    images = render_points(points, 28)
    assert images.shape == (2, 1, 28, 28)
    assert images[0, 0, 0, 1] == 392 and images[0, 0, 5, 3] == 392
    assert images[0].mean().item() == pytest.approx(1.0)
    assert images[1, 0, 2, 2] == 784 and images[1].sum() == 784                         # coinciding points add up
    assert render_points(points, 8, value=1.0).sum() == 4


def test_twopoints_images_labels_and_splits():
    train = build_dataset("twopoints", "train", ptr=256, seed=1)
    assert train.images.shape == (256, 1, 28, 28) and train.num_classes == 2
    assert train.mean == (0.0,) and train.std == (1.0,)
    assert set(train.images.unique().tolist()) == {0.0, 392.0}  # d^2/2, points are distinct pixels
    assert torch.all(train.images.sum((1, 2, 3)) == 784) and train.images.mean().item() == pytest.approx(1.0)
    p = train.extras["points"]
    assert p.shape == (256, 2, 2)
    rows, cols = p[..., 0], p[..., 1]
    assert torch.all(rows != cols)  # the i != j quirk
    assert torch.all(train.images[torch.arange(256)[:, None], 0, rows, cols] == 392)
    dist = (p[:, 0] - p[:, 1]).double().norm(dim=1)
    assert torch.all((dist < 13) == (train.labels == 1)) and torch.all((dist >= 15) == (train.labels == 0))

    test = build_dataset("twopoints", "test", ptr=256)
    assert len(test.labels) == 1024 and test.labels.sum() == 512  # 4 ptr, half per class
    probe = build_dataset("twopoints", "probe")
    assert len(probe.labels) == 5000 and probe.labels.sum() == 2500
    key = lambda data: {tuple(x) for x in data.extras["points"].flatten(1).tolist()}  # noqa: E731
    assert not key(train) & key(test)  # train pool and test are disjoint for the same ptr
    assert key(build_dataset("twopoints", "test", ptr=1024)) <= key(probe)  # the last samples of each class
    assert torch.equal(build_dataset("twopoints", "train", ptr=256, seed=1).images, train.images)
    assert not torch.equal(build_dataset("twopoints", "train", ptr=256, seed=2).labels, train.labels)
    with pytest.raises(ToolkitError, match="too few"):
        build_dataset("twopoints", "train", ptr=200_000)
    with pytest.raises(ToolkitError, match="unknown norm"):
        build_dataset("twopoints", "test", norm="L1")
