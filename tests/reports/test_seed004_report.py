"""reports/seed004.py on hand-made extract files: a sigma sweep of one architecture (model folders "<model>@sigma<s>")
draws Fig. 1/10 in one figure, and the 1-D experiments found in several groups are drawn once per seed (Fig. 7)."""
import numpy as np
import pytest

from pipeline.contract import stage_path
from reports import Group, ReportOptions, seed004
from reports.references import PROTOCOLS
from utils.io import save_npz
from utils.rundir import RunDir

SIGMAS = {"resnet18": 0.0, "resnet18@sigma0.1": 0.1, "resnet18@sigma10": 10.0}
NODES = np.array(["conv1", "layer1.0.add", "output"])


def fake_extract(run: RunDir, sigma: float, seed: int, scale1d_seed: int | None = None,
                 init_nodes: np.ndarray = NODES) -> None:
    rng = np.random.default_rng(seed + int(10 * sigma))
    arrays = {"test_error": 0.1 + 0.01 * sigma + 0.01 * seed, "corruption_std": sigma, "probe_corruption_std": sigma}
    for mode, scale, nodes in (("trained", 0.1 * (1 + sigma), NODES), ("init", 1.0, init_nodes),
                               ("shuffled", 0.5, NODES)):
        d, g = rng.uniform(0.5, 1.5, len(nodes)) * scale, rng.uniform(0.5, 1.5, len(nodes))
        arrays.update({f"{mode}_nodes": nodes, f"{mode}_D": d, f"{mode}_G": g, f"{mode}_R": d / g})
    if scale1d_seed is not None:
        k = np.arange(1, 6)
        arrays.update({f"scale1d_{m}_{q}": rng.uniform(0.1, 1, 5) for m in ("trained", "init", "trained_chmean",
                                                                            "pooling", "prediction") for q in "DGR"})
        arrays.update({f"scale1d_diffusive_{q}": k_law for q, k_law in
                       (("D", 1 / np.arange(1, 33)), ("G", np.arange(1, 33) ** 0.5), ("R", np.arange(1, 33) ** -1.5))})
        arrays.update(scale1d_layers=k, scale1d_diffusive_k=np.arange(1, 33), scale1d_seed=np.array(scale1d_seed),
                      scale1d_length=np.array(32), scale1d_xi=np.array(8), scale1d_channels=np.array(16),
                      scale1d_ptr=np.array(64), scale1d_epochs=np.array(3), scale1d_converged=np.array(True),
                      scale1d_test_error=np.array(0.05))
    path = stage_path(run, "extract", "seed004")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npz(path, **arrays)


@pytest.fixture()
def groups(tmp_path):
    groups = []
    for folder, sigma in SIGMAS.items():
        runs = tuple(RunDir(tmp_path / "digits" / folder / f"rnd{seed}") for seed in (0, 1))
        for seed, run in enumerate(runs):
            fake_extract(run, sigma, seed, scale1d_seed=seed if folder != "resnet18@sigma10" else None)
        groups.append(Group("digits", folder, runs))
    return groups


def test_architecture_reads_the_sigma_of_a_run_variant():
    assert seed004.architecture("vgg11@sigma10") == ("vgg11", 10.0)
    assert seed004.architecture("vgg11@sigma0.01-ptr2048") == ("vgg11", 0.01)
    assert seed004.architecture("vgg11") == ("vgg11", None)
    assert seed004.architecture("lenet@ptr2048") == ("lenet", None)


def test_a_sigma_sweep_is_one_architecture_in_one_figure(groups, tmp_path):
    groups_runs = [(g, seed004._runs(g)) for g in groups]
    points = seed004.output_points(groups_runs)
    assert [(p["model"], p["sigma"]) for p in points] == [("resnet18", 0.0), ("resnet18", 0.1), ("resnet18", 10.0)]
    assert all(len(p["R"]) == 2 and len(p["error"]) == 2 for p in points)
    out = tmp_path / "report"
    text = seed004.average(groups, out, ReportOptions())
    assert (out / "seed004_rf_vs_error.png").is_file() and (out / "seed004_rf_vs_error.pdf").is_file()
    other = PROTOCOLS["paper-other"]
    assert f"| digits/resnet18@sigma10 | {other} | 10 | 2 |" in text and "R_f shuffled |" in text
    assert "R_f fresh (extra)" in text and "R_f shuffled2 (extra)" in text
    assert text.count(f"| 0 | {other} | 16 | 3 | True |") == 1 and "seed004_scale1d.png" in text   # once a seed
    for folder in SIGMAS:
        assert (out / f"seed004_digits_{folder}_layers.png").is_file()


def test_the_1d_experiment_is_drawn_once_per_distinct_seed(groups, tmp_path):
    groups_runs = [(g, seed004._runs(g)) for g in groups]
    distinct = seed004.scale1d_runs(groups_runs)
    assert [int(r["scale1d_seed"]) for r in distinct] == [0, 1]                      # 4 copies, 2 seeds
    figure = seed004.scale1d_figure(distinct, tmp_path / "report")
    assert figure.name == "seed004_scale1d.png" and figure.is_file() and figure.with_suffix(".pdf").is_file()
    assert seed004.scale1d_figure([], tmp_path / "report") is None


def test_init_by_node_is_drawn_by_node_and_an_output_only_init_at_the_output_tick(tmp_path):
    """Issue 28 item 2: modes are placed by node name, so init measured at the output only is one point at the
    output's position (not at x = 0 under the first node's tick), and init by node is a curve over every node."""
    runs = []
    for seed, init_nodes in ((0, np.array(["output"])), (1, NODES)):
        run = RunDir(tmp_path / "cifar10" / f"vgg11_{seed}" / "rnd0")
        fake_extract(run, 0.0, seed, init_nodes=init_nodes)
        runs.append(seed004._runs(Group("cifar10", f"vgg11_{seed}", (run,))))
    longest, curves = seed004.node_curves(runs[0], "R")
    assert list(longest) == list(NODES)
    x, values = curves["init"]
    assert list(x) == [2] and values.shape == (1, 1) and values[0, 0] == runs[0][0]["init_R"][0]
    assert list(curves["trained"][0]) == [0, 1, 2]
    _, curves = seed004.node_curves(runs[1], "R")
    x, values = curves["init"]
    assert list(x) == [0, 1, 2] and np.array_equal(values[0], runs[1][0]["init_R"])


def test_rows_carry_protocol_and_reference_and_twopoints_has_its_own_panels(tmp_path, monkeypatch):
    """Issue 28 item 4: cifar10 and twopoints rows are the paper's protocol, digits rows the paper's on other data;
    the reference column holds the spec's R_f ~ 1 at init for the CIFAR-10 nets; the predecessor's law is drawn on
    the CIFAR-10 row of Fig. 1/10 only (twopoints: its own row of panels, no law); the 1-D R_k panel says that the
    original notebook draws const."""
    drawn = {}

    def keep(fig, out, stem):
        drawn[stem] = fig
        return out / f"{stem}.png"

    monkeypatch.setattr(seed004, "save_figure", keep)
    groups = []
    for dataset, folder, sigma in (("cifar10", "vgg11", 0.0), ("twopoints", "lenet@ptr2048", 0.0),
                                   ("digits", "resnet18", 0.0)):
        runs = tuple(RunDir(tmp_path / dataset / folder / f"rnd{seed}") for seed in (0, 1))
        for seed, run in enumerate(runs):
            fake_extract(run, sigma, seed, scale1d_seed=seed if dataset == "digits" else None)
        groups.append(Group(dataset, folder, runs))
    text = seed004.average(groups, tmp_path, ReportOptions())
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines()
            if line.startswith(("| cifar10/", "| twopoints/", "| digits/"))}
    assert rows["cifar10/vgg11"][1] == PROTOCOLS["paper"] and rows["twopoints/lenet@ptr2048"][1] == PROTOCOLS["paper"]
    assert rows["digits/resnet18"][1] == PROTOCOLS["paper-other"]
    assert rows["cifar10/vgg11"][-1].strip("| ") == "R_f at the output, init (order): 1 (paper)"
    assert rows["twopoints/lenet@ptr2048"][-1].strip("| ") == "-"
    figure = drawn["seed004_rf_vs_error"]
    panels = {ax.get_title(): ax for ax in figure.axes if ax.get_title()}
    assert {"cifar10", "twopoints", "digits"} <= set(panels)
    laws = {ax.get_title() for ax in figure.axes for line in ax.get_lines()
            if "predecessor" in str(line.get_label())}
    assert laws == {"cifar10", "digits"}
    r_panel = drawn["seed004_scale1d"].axes[0]                                       # QUANTITIES: R first
    assert r_panel.get_ylabel().startswith("relative stability")
    assert any("notebook draws const" in str(line.get_label()) for line in r_panel.get_lines())
    assert any("channel mean (extra)" in str(line.get_label()) for line in drawn["seed004_scale1d"].axes[0].get_lines())
