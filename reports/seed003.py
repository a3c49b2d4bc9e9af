"""seed003 (class-specific filters): per-run extraction and the across-seed report section.

extract(run) reads the decompose-{indices,validate,essential,finetune} stages (pipeline.contract) and writes the
extract stage's seed003 file:
  full_acc, decomposed_acc {k: acc}, finetune {k: [acc before, after epoch 1, ...]},
  essential {k: {"inf": [fraction per class], "noninf": [...]}}, mutual_info {k}, mutual_info_offdiag {k},
  fc_topk_overlap {k}, psi_selectivity, class_selectivity_index, skipped_k [k of the default grid skipped for
  exceeding the layer's filters], filters, layers {names, widths, psi, class_selectivity: one value per analysis
  layer, None where undefined (signed input)};
  finetune_lr, network [the imported weights file's name, "" for a net trained here], selectivity_start
  [finetune or scratch, for a regularised run];
  csg {the same keys, csg_order [smallest, largest, or file: --indices], scored_on [the --csg-weights file's name,
  "" for the run's own network]}: from the decompose-csg-* stages, when CSG filter sets were measured.
The report shows ours against CSG side by side (MI, essentiality, decomposed accuracy) when a run has both, the
selectivity per layer (§10), and nets trained with the selectivity regulariser (<model>@si<alpha>, §10) against the
plain nets of the same dataset and model. Every table row carries its protocol (reports.references.PROTOCOLS: the
paper's on CIFAR-10 ResNet-20, on other data or networks, or an extra: the journal version's Psi / SI tables and
regularised nets, §10, and CSG's largest gates) and the paper's number where it gives one (reports.references).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from pipeline import contract
from pipeline.loaded import load_config
from reports import Group, ReportOptions
from reports.figures import band, markdown_table, new_figure, save_figure, write_csv
from reports.figures import summary as across_seeds
from reports.references import PROTOCOLS, markdown, reference_cell
from utils.rundir import RunDir, split_selectivity, split_variant

TITLE = "Decomposing the Deep: class-specific filters (seed003)"
SUBCOMMANDS = ("indices", "validate", "essential", "finetune")
LAYER_MEASURES = {"psi": "psi(0.5)", "class_selectivity": "class selectivity index"}   # per layer (§10)


def _stage(subcommand: str, source: str) -> str:
    return contract.decompose_stage(subcommand, source)


FORMAT = 2   # 2: network, finetune_lr, selectivity_start, csg_order, scored_on


def has_outputs(run: RunDir) -> bool:
    return any(contract.done(run, _stage(sub, source)) for sub in SUBCOMMANDS for source in contract.DECOMPOSE_SOURCES)


def _extract_source(run: RunDir, source: str) -> dict:
    """The compact results of the filter sets of `source` (module docstring)."""
    summary: dict = {}
    if contract.done(run, _stage("validate", source)):
        validate = contract.load(run, _stage("validate", source), "validate")
        summary["full_acc"] = validate["full"]
        summary["decomposed_acc"] = validate["decomposed"]
    if contract.done(run, _stage("indices", source)):
        indices = contract.load(run, _stage("indices", source), "summary")
        ks = [k for k, v in indices.items() if isinstance(v, dict)]
        summary["mutual_info"] = {k: indices[k]["mutual_info"] for k in ks}
        summary["mutual_info_offdiag"] = {k: indices[k]["mutual_info_offdiag"] for k in ks}
        summary["fc_topk_overlap"] = {k: indices[k]["fc_topk_overlap_mean"] for k in ks}
        summary["psi_selectivity"] = indices["psi_selectivity_0.5"]
        summary["class_selectivity_index"] = indices["class_selectivity_index"]
        summary["skipped_k"], summary["filters"] = indices["skipped_k"], indices["filters"]
        if source == "csg":
            flags = contract.done_record(run, _stage("indices", source))["flags"]
            summary["csg_order"] = flags.get("csg_order", "largest") if flags.get("csg_gates") else "file"
        if contract.stage_path(run, _stage("indices", source), "selectivity").is_file():
            layers = contract.load(run, _stage("indices", source), "selectivity")
            summary["layers"] = {"names": layers["names"].tolist(), "widths": layers["widths"].tolist(),
                                 **{key: [None if np.isnan(v) else float(v) for v in layers[key]]
                                    for key in LAYER_MEASURES}}
    if contract.done(run, _stage("essential", source)):
        essential = contract.load(run, _stage("essential", source), "essential")
        summary["essential"] = {k: {"inf": (np.array(v["noise_at_inf"]) / np.array(v["n"])).tolist(),
                                    "noninf": (np.array(v["noise_at_noninf"]) / np.array(v["n"])).tolist()}
                                for k, v in essential.items()}
    if contract.done(run, _stage("finetune", source)):
        finetune = contract.load(run, _stage("finetune", source), "finetune")
        summary["finetune"] = {k: [v["before"], *v["after_epoch"]] for k, v in finetune.items()}
        summary["finetune_lr"] = contract.done_record(run, _stage("finetune", source))["flags"]["lr"]
    scored = [sub for sub in ("validate", "essential", "indices") if contract.done(run, _stage(sub, source))]
    if source == "csg" and scored:
        weights = contract.done_record(run, _stage(scored[0], source))["flags"].get("csg_weights")
        summary["scored_on"] = Path(weights).name if weights else ""
    return summary


def extract(run: RunDir, out: contract.StageOutput) -> dict:
    summary = _extract_source(run, "ours")
    config = load_config(run)
    summary["network"] = Path(config["imported"]["weights"]).name if "imported" in config else ""
    if config["flags"].get("selectivity_reg"):
        summary["selectivity_start"] = config["flags"].get("selectivity_start", "scratch")
    csg = _extract_source(run, "csg")
    if csg:
        summary["csg"] = csg
    out.save("seed003", summary)
    return summary


def _runs(group: Group) -> list[dict]:
    return [contract.load(run, "extract", "seed003") for run in group.runs
            if contract.stage_path(run, "extract", "seed003").is_file()]


def average(groups: list[Group], out: Path, options: ReportOptions) -> str:
    rows, sections, csg_rows, skipped, layer_rows, extracted = [], [], [], [], [], []
    for group in groups:
        runs = _runs(group)
        if not runs:
            continue
        extracted.append((group, runs))
        stem = f"seed003_{group.dataset}_{group.model}"
        ks = sorted({k for r in runs for k in r.get("decomposed_acc", {})}, key=float)
        fig, axes = new_figure(ncols=3)
        if ks:
            full = np.array([r["full_acc"] for r in runs if "full_acc" in r])
            dec = np.array([[r["decomposed_acc"][k] for k in ks] for r in runs if "decomposed_acc" in r])
            ax = axes[0, 0]
            ax.axhline(np.median(full), color="k", linestyle="--", label="full classifier")
            ax.errorbar(ks, np.median(dec, 0), yerr=[np.median(dec, 0) - dec.min(0), dec.max(0) - np.median(dec, 0)],
                        marker="o", capsize=3, label="decomposed (no retraining)")
            ax.set(xlabel="filters per class k", ylabel="test accuracy", title="decomposed final layer")
            ax.legend(loc="lower right")
        curves = [r["finetune"] for r in runs if "finetune" in r]
        for k in sorted({k for c in curves for k in c}, key=float):
            values = np.array([c[k] for c in curves if k in c])
            axes[0, 1].plot(range(values.shape[1]), np.median(values, 0), marker="o", label=f"k={k}")
        axes[0, 1].set(xlabel="finetuning epoch", ylabel="test accuracy", title="finetuning the decomposed net")
        axes[0, 1].xaxis.get_major_locator().set_params(integer=True)
        if curves:
            axes[0, 1].legend()
        essential = [r["essential"] for r in runs if "essential" in r]
        if essential:
            k = sorted(essential[0], key=float)[0]
            inf = np.median([e[k]["inf"] for e in essential], 0)
            noninf = np.median([e[k]["noninf"] for e in essential], 0)
            classes = np.arange(len(inf))
            axes[0, 2].bar(classes - 0.2, inf, 0.4, label=f"S_c replaced (k={k})")
            axes[0, 2].bar(classes + 0.2, noninf, 0.4, label="others replaced")
            axes[0, 2].set(xlabel="class", ylabel="fraction still correct", title="essentiality under N(0,1)")
            axes[0, 2].legend()
        png = save_figure(fig, out, stem)
        sections.append(f"![{group.label}]({png.name})")
        protocol, network = _protocol(group), _network(runs)
        for k in ks:
            pick = lambda key, r, k=k: r.get(key, {}).get(k, np.nan)  # noqa: E731
            rows.append([group.label, k, len(runs),
                         float(np.median([r["full_acc"] for r in runs])),
                         float(np.median([pick("decomposed_acc", r) for r in runs])),
                         float(np.median([r["finetune"][k][-1] if k in r.get("finetune", {}) else np.nan
                                          for r in runs])),
                         float(np.median([pick("mutual_info", r) for r in runs])),
                         float(np.median([pick("mutual_info_offdiag", r) for r in runs])),
                         float(np.median([pick("fc_topk_overlap", r) for r in runs])),
                         float(np.median([r.get("psi_selectivity", np.nan) for r in runs])),
                         PROTOCOLS[protocol], network,
                         *[_reference(group, protocol, row) for row in ("full", f"decomposed k={k}",
                                                                        f"finetuned k={k}",
                                                                        f"mutual information k={k}")]])
        csg_rows += _csg_rows(group, runs)
        layered = [r["layers"] for r in runs if "layers" in r]
        if layered:
            sections.append(f"![{group.label} per layer]({_layer_figure(layered, out, stem + '_layers').name})")
            layer_rows += [[*row, PROTOCOLS["extra"], "-"] for row in _layer_rows(group, layered)]
        for run in runs:
            if run.get("skipped_k"):
                skipped.append(f"{group.label}: k = {', '.join(run['skipped_k'])} of the default grid skipped "
                               f"(more than the {run['filters']} filters of the analysed layer)")
    if not sections:
        return ""
    table = markdown_table(["group", "k", "seeds", "full acc", "decomposed acc", "finetuned acc", "MI (self)",
                            "MI (off-diag)", "top-k FC overlap", "psi(0.5) (journal extra)", "protocol", "network",
                            "paper: full acc", "paper: decomposed acc", "paper: finetuned acc", "paper: MI (self)"],
                           rows)
    lrs = sorted({r["finetune_lr"] for _, runs in extracted for r in runs if "finetune_lr" in r})
    text = (f"## {TITLE}\n\nMedians over seeds. Decomposed = each class's logit restricted to its k most "
            f"influential filters (§5); MI in nats, lower = more class-specific (§9); top-k FC overlap = filters "
            f"shared with the k largest classifier weights of the class (§4); psi(0.5) is a journal-version extra "
            f"(§10). Finetuned = after the last epoch of Adam at lr {' / '.join(f'{lr:g}' for lr in lrs) or '-'} "
            f"(repo 1's default 2e-4, §6); the paper's finetuned number is the README's 91.30-91.40% after one epoch "
            f"at lr 1e-4, the rate the spec's >= 91.3% target assumes. Network: the imported weights file (the "
            f"paper's numbers came from akamaster's resnet20-12fca82f.th: reproduce.py --akamaster-weights), or "
            f"trained here. Protocol: \"{PROTOCOLS['paper']}\" = CIFAR-10 ResNet-20 measured as the paper did; "
            f"\"{PROTOCOLS['paper-other']}\" = the same on other data or another network; "
            f"\"{PROTOCOLS['extra']}\" = regularised nets (journal version, §10).\n\n{table}\n\n")
    if skipped:
        text += "".join(f"- {line}\n" for line in dict.fromkeys(skipped)) + "\n"
    if csg_rows:
        comparison = markdown_table(["group", "k", "seeds", "MI ours", "MI CSG", "S_c replaced: ours",
                                     "S_c replaced: CSG", "others replaced: ours", "others replaced: CSG",
                                     "decomposed acc ours", "decomposed acc CSG", "CSG sets", "CSG scored on",
                                     "protocol", "paper: MI ours", "paper: MI CSG"], csg_rows)
        text += ("### Ours against CSG (§8)\n\nThe same measures for our filter sets and for the CSG gates' sets, "
                 "medians over seeds; S_c replaced / others replaced = fraction of a class's test images still "
                 "classified correctly when its set (or every other filter) is replaced by N(0, 1) noise (§7), "
                 "mean over classes. CSG sets: the k smallest gates of each class, as the paper's code (§8, "
                 "§12.2); largest = Liang et al.'s reading, a toolkit extra; file = sets given by --indices. CSG "
                 "scored on: the paper scores the CSG sets on the CSG-trained ResNet-20 (§7-8); \"our net\" = on "
                 "the run's own network (no --csg-weights), which changes the essentiality and decomposed-accuracy "
                 f"columns, not the MI.\n\n{comparison}\n\n")
    regularised = _regularised_rows(extracted)
    if regularised:
        header = ["plain group", "alpha", "k", "seeds plain/reg", *[f"{name} {net}" for name in
                  ("full acc", "decomposed acc", "MI (self)", "SI head", "SI mean over layers") for net in
                  ("plain", "reg")], "start", "protocol", "paper"]
        text += ("### Selectivity-regularised against plain nets (§10, a journal-version extra)\n\nNets trained with "
                 "loss = CE - alpha * mean class selectivity of the stage outputs (Leavitt & Morcos 2021; alpha < 0 "
                 "lowers selectivity) beside the plain nets of the same dataset and model, per k: medians over seeds; "
                 "SI head = mean class selectivity index at the classifier input, SI mean over layers = its mean over "
                 "the analysis layers. Start: finetune = the plain net fine-tuned with the regulariser (repo 2: Adam "
                 "2e-4, 10 epochs, batch 128; the default), scratch = trained from initialisation with it (Leavitt & "
                 "Morcos's protocol). Repo 2 code (the journal version, §10): no published number to set beside it."
                 f"\n\n{markdown_table(header, regularised)}\n\n")
    if layer_rows:
        header = ["group", "layer", "module", "width", "seeds", *[f"{name} median [IQR]"
                                                                 for name in LAYER_MEASURES.values()],
                  "protocol", "paper"]
        write_csv(out / "seed003_layers.csv", header, layer_rows)
        text += ("### Selectivity per layer (§10, a journal-version extra: no paper number)\n\nLayer l = the "
                 "input of the l-th weight layer (the last: the classifier input), each channel averaged over "
                 "space, on the training split; psi(0.5) = 1 - the median fraction of units holding half an "
                 "instance's L1 mass (mean over classes), class selectivity = mean over units of (mu_max - "
                 "mu_-max) / (mu_max + mu_-max); medians over seeds [25%-75%]; undefined (nan) on the signed "
                 f"network input.\n\n{markdown_table(header, layer_rows)}\n\n")
    text += f"### The paper's numbers (reports.references)\n\n{markdown('003')}\n\n"
    return text + "\n\n".join(sections)


def _protocol(group: Group) -> str:
    """A group's PROTOCOLS key: the paper's on CIFAR-10 ResNet-20 (no variant), an extra for regularised nets
    (§10), else the paper's protocol on other data or another network."""
    model, variant = split_variant(group.model)
    if split_selectivity(variant)[0]:
        return "extra"
    return "paper" if (group.dataset, model, variant) == ("cifar10", "resnet20", "") else "paper-other"


def _reference(group: Group, protocol: str, row: str, fmt: str = ".4f") -> str:
    """The paper's number for one measure of a group's row (reports.references), none for an extra."""
    if protocol == "extra":
        return "-"
    metric = "MI with self-pairs (nats)" if row.startswith("mutual information") else "test accuracy"
    return reference_cell("003", group.dataset, split_variant(group.model)[0], row, "", metric, fmt)


def _network(runs: list[dict]) -> str:
    """The imported weights file(s) the runs measure, or "trained here"."""
    return ", ".join(sorted({r["network"] for r in runs if r.get("network")})) or "trained here"


def _regularised_rows(extracted: list[tuple[Group, list[dict]]]) -> list[list]:
    """One row per (regularised group, k) whose plain twin (same dataset, model and other variant parts) was
    extracted: the medians over seeds of each measure, plain then regularised."""
    plain, found = {}, []
    for group, runs in extracted:
        model, variant = split_variant(group.model)
        alpha, rest = split_selectivity(variant)
        if alpha:
            found.append((group.dataset, model, rest, alpha, runs))
        else:
            plain[group.dataset, model, rest] = (group, runs)
    rows = []
    for dataset, model, rest, alpha, runs in found:
        if (dataset, model, rest) not in plain:
            continue
        twin, plain_runs = plain[dataset, model, rest]
        ks = sorted({k for r in [*runs, *plain_runs] for k in r.get("decomposed_acc", {})}, key=float)
        for k in ks:
            cells = [_median([_measure(r, measure, k) for r in results]) for measure in
                     ("full_acc", "decomposed_acc", "mutual_info", "class_selectivity_index", "layers")
                     for results in (plain_runs, runs)]
            start = ", ".join(sorted({r.get("selectivity_start", "scratch") for r in runs}))
            rows.append([twin.label, f"{alpha:g}", k, f"{len(plain_runs)}/{len(runs)}", *cells, start,
                         PROTOCOLS["extra"], "-"])
    return rows


def _measure(result: dict, measure: str, k: str):
    """One seed's value of a measure of the regularised-vs-plain table (None when not measured)."""
    value = result.get(measure)
    if measure == "layers":
        return None if value is None else float(np.nanmean(_layer_values([value], "class_selectivity")))
    return value.get(k) if isinstance(value, dict) else value


def _layer_figure(layered: list[dict], out: Path, stem: str) -> Path:
    """Psi and the class selectivity index against layer depth, median over seeds with the 25-75% band."""
    fig, axes = new_figure(ncols=len(LAYER_MEASURES))
    depth = np.arange(len(layered[0]["names"]))
    for ax, (key, name) in zip(axes[0], LAYER_MEASURES.items()):
        band(ax, depth, _layer_values(layered, key))
        ax.set(xlabel="layer (input of weight layer l)", ylabel=name, title=f"{name} per layer")
    return save_figure(fig, out, stem)


def _layer_values(layered: list[dict], key: str) -> np.ndarray:
    """(seeds, layers) values of one per-layer measure, NaN where undefined."""
    return np.array([[np.nan if v is None else v for v in layers[key]] for layers in layered], dtype=float)


def _layer_rows(group: Group, layered: list[dict]) -> list[list]:
    """One table row per layer: the measures' medians over seeds with their 25-75% quantiles."""
    cells = []
    for key in LAYER_MEASURES:
        values = _layer_values(layered, key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # the signed input layer: all NaN
            centre, low, high = across_seeds(values)
        cells.append([f"{c:.3f} [{lo:.3f}-{hi:.3f}]" for c, lo, hi in zip(centre, low, high)])
    first = layered[0]
    return [[group.label, layer, name, first["widths"][layer], len(layered), *[column[layer] for column in cells]]
            for layer, name in enumerate(first["names"])]


def _csg_rows(group: Group, runs: list[dict]) -> list[list]:
    """Ours against CSG per k (MI, essentiality, decomposed accuracy), medians over the runs that hold both."""
    pairs = [(r, r["csg"]) for r in runs if "csg" in r]
    if not pairs:
        return []

    def value(result: dict, measure: str, k: str):
        if measure in ("inf", "noninf"):
            found = result.get("essential", {}).get(k)
            return None if found is None else float(np.mean(found[measure]))
        return result.get(measure, {}).get(k)

    def both(measure: str, k: str) -> list[float]:
        return [_median([value(part, measure, k) for part in parts]) for parts in zip(*pairs)]

    ks = sorted({k for pair in pairs for part in pair for key in ("mutual_info", "decomposed_acc", "essential")
                 for k in part.get(key, {})}, key=float)
    orders = ", ".join(sorted({csg.get("csg_order", "-") for _, csg in pairs}))
    scored = ", ".join(sorted({csg.get("scored_on") or "our net" for _, csg in pairs}))
    protocol = _protocol(group)
    if "largest" in orders:
        protocol = "extra"
    elif scored == "our net" and protocol == "paper":   # the paper's sets, scored on another network (§7-8)
        protocol = "paper-other"
    return [[group.label, k, len(pairs), *both("mutual_info", k), *both("inf", k), *both("noninf", k),
             *both("decomposed_acc", k), orders, scored, PROTOCOLS[protocol],
             _reference(group, protocol, f"mutual information k={k}"),
             _reference(group, protocol, f"mutual information CSG k={k}")] for k in ks]


def _median(values: list) -> float:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else float("nan")
