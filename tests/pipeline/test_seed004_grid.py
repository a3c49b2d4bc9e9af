"""reproduce.py's seed004 grids (issue 17 item 3, issue 28 items 1, 2, 5): the published grid's parts (the sigma
sweep of the CNNs and of the FCNs, the twopoints nets at ptr 1024 and 2048) with their stages, and the demo's sigma
sweep with the 1-D stage."""
import reproduce
from pipeline.plan import build_plan, resolve_grid

CNNS = ("vgg11_nobn", "vgg11", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "alexnet", "lenet",
        "efficientnet_b0")
SIGMAS = (0.0, 1e-2, 1e-1, 1.0, 10.0, 30.0, 100.0)


def plan(*argv):
    args = reproduce.parse_args([*argv, "--workdir", "runs"])
    parts = resolve_grid(args)
    return parts, build_plan(args, parts)[0]


def stages_of(chains, folder):
    chain = next(c for c in chains if c.label == folder)
    return [command.stage for command in chain.commands]


def test_full_grid_has_the_sigma_sweeps_the_fcns_and_the_twopoints_nets():
    (cnn, fcn, twopoints, twopoints2048), chains = plan("--paper", "004", "--full")
    assert cnn.models == CNNS and cnn.seeds == tuple(range(4)) and cnn.corruptions == SIGMAS
    assert (cnn.traindata, cnn.epochs, cnn.recipe) == (("cifar10",), 250, "seed004")
    assert fcn.models == ("fcn2", "fcn4", "fcn6") and fcn.seeds == tuple(range(11)) and fcn.recipe == "seed004_fcn"
    assert fcn.corruptions == SIGMAS
    assert twopoints.traindata == ("twopoints",) and len(twopoints.models) == 11 and "vgg13" in twopoints.models
    assert (twopoints.seeds, twopoints.epochs, twopoints.recipe) == (tuple(range(10)), 300, "twopoints")
    assert twopoints.ptrs == (1024,) and twopoints2048.ptrs == (2048,) and twopoints2048.models == twopoints.models
    assert len(chains) == 10 * 4 * 7 + 3 * 11 * 7 + 11 * 10 * 2
    assert stages_of(chains, "cifar10/vgg11@sigma30/rnd2") == ["train", "stability", "stability-init",
                                                                 "stability-shuffled", "laplacian", "extract"]
    assert stages_of(chains, "cifar10/fcn6@sigma0.01/rnd10") == ["train", "stability", "stability-init", "extract"]
    assert stages_of(chains, "twopoints/lenet/rnd9") == ["train", "stability", "stability-init",
                                                         "stability-shuffled", "laplacian", "scale1d", "extract"]
    # Fig. 8's second training size (issue 28 item 1): its own run folders, the twopoints stages, the 1-D model once
    assert stages_of(chains, "twopoints/lenet@ptr2048/rnd9") == ["train", "stability", "stability-init",
                                                                 "stability-shuffled", "laplacian", "extract"]
    train = next(c for c in chains if c.label == "twopoints/vgg13@ptr2048/rnd0").commands[0].argv
    assert train[train.index("--ptr") + 1] == "2048"
    # init measured by node (issue 28 item 2), on one BN batch of all 500 probes
    init = next(c for c in chains if c.label == "cifar10/vgg11@sigma30/rnd2").commands[2].argv
    assert init[0] == "stability.py" and "--init" in init and "--by_layer" in init and "--batchsize" not in init
    scale1d = next(c for c in chains if c.label == "twopoints/lenet/rnd9").commands[5].argv
    assert scale1d[0] == "scale1d.py" and scale1d[scale1d.index("--scale1d_epochs") + 1] == "600000"
    train = next(c for c in chains if c.label == "cifar10/fcn6@sigma0.01/rnd10").commands[0].argv
    assert train[train.index("--gaussian_corruption_std") + 1] == "0.01" and "seed004_fcn" in train
    stability = next(c for c in chains if c.label == "cifar10/vgg11@sigma30/rnd2").commands[1].argv
    assert "--corrupt_test" in stability and "--gaussian_corruption_std" in stability


def test_demo_is_a_sigma_sweep_on_digits_with_the_paper_init_and_the_1d_stage():
    (part,), chains = plan("--paper", "004")
    assert part.traindata == ("digits",) and part.corruptions == (0.0, 10.0, 30.0) and part.recipe == "seed004"
    assert part.width == 0.25 and len(chains) == 3 * 2
    assert stages_of(chains, "digits/resnet18@sigma10/rnd0") == ["train", "stability", "stability-init",
                                                                 "stability-shuffled", "laplacian", "scale1d",
                                                                 "extract"]
    # the 1-D net is the stage's own (it reads nothing of the run): the demo runs it for the first seed only
    assert "scale1d" not in stages_of(chains, "digits/resnet18@sigma10/rnd1")
