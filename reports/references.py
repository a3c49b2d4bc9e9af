"""Published numbers that a report row can be set beside, each with its source: one table for every paper.

    reference_cell("000", "cifar10", "resnet18", "msp", "cifar100")   # '0.880 (literature: OpenOOD v1.5 near-OOD)'

A reference is the paper's own number (kind "paper") or, where the paper gives none, a published number for the
same score, data and network from elsewhere (kind "literature"), which is context and never a reproduction target.
Values are fractions (AUROC 0.8803, not 88.03). Sources name the spec section (in shared/spec/) they come from.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    """One published number: paper, ID dataset, model, report row, OOD set (tag), metric, value, source, kind."""

    paper: str
    dataset: str
    model: str
    row: str
    ood: str
    metric: str
    value: float
    source: str
    kind: str = "paper"
    label: str = ""      # a short name shown in the cell, e.g. "OpenOOD v1.5 near-OOD"


# the protocol of a report row, shared by every paper's tables: the paper's measurement, the same on other
# data (digits, stand-ins, other sizes), or this toolkit's own addition
PROTOCOLS = {"paper": "paper's protocol", "paper-other": "paper's protocol, other data",
             "extra": "toolkit extra"}

_OPENOOD = "spec ecosystem.md §1.7 (OpenOOD v1.5 leaderboard: ResNet-18, 100 epochs, 3 runs)"
_NEAR, _FAR = "OpenOOD v1.5 near-OOD", "OpenOOD v1.5 far-OOD"
_SEED004_NETS = ("vgg11_nobn", "vgg11", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "alexnet", "lenet",
                 "efficientnet_b0", "fcn2", "fcn4", "fcn6")   # seed004's CIFAR-10 nets (pipeline.grid)
_SEED004_INIT = "spec seed004 §1.5, §6 (NeurIPS'21 predecessor: R_f ~ 1 at init, every architecture)"
_SEED004_FCN = "spec seed004 §1.5, §6 (FCNs stay at R_f >~ 1 after training)"
REFERENCES = (
    # seed000: the paper's body could not be retrieved (spec seed000 §1, §11), so no row has a paper number. OpenOOD's
    # means over its near-OOD sets (CIFAR-100, TinyImageNet for ID CIFAR-10; CIFAR-10, TinyImageNet for CIFAR-100)
    # and far-OOD sets (MNIST, SVHN, Textures, Places365) stand beside the sets of each kind that seed000 reports.
    Reference("000", "cifar10", "resnet18", "msp", "cifar100", "AUROC", 0.8803, _OPENOOD, "literature", _NEAR),
    Reference("000", "cifar10", "resnet18", "msp", "svhn", "AUROC", 0.9073, _OPENOOD, "literature", _FAR),
    Reference("000", "cifar10", "resnet18", "msp", "mnist", "AUROC", 0.9073, _OPENOOD, "literature", _FAR),
    Reference("000", "cifar10", "resnet18", "mahalanobis", "cifar100", "AUROC", 0.8420, _OPENOOD, "literature", _NEAR),
    Reference("000", "cifar10", "resnet18", "mahalanobis", "svhn", "AUROC", 0.8972, _OPENOOD, "literature", _FAR),
    Reference("000", "cifar10", "resnet18", "mahalanobis", "mnist", "AUROC", 0.8972, _OPENOOD, "literature", _FAR),
    Reference("000", "cifar100", "resnet18", "mahalanobis", "cifar10", "AUROC", 0.5869, _OPENOOD, "literature",
              _NEAR),
    Reference("000", "cifar100", "resnet18", "mahalanobis", "svhn", "AUROC", 0.6939, _OPENOOD, "literature", _FAR),
    Reference("000", "cifar100", "resnet18", "mahalanobis", "mnist", "AUROC", 0.6939, _OPENOOD, "literature", _FAR),
    # seed002: rows "<reading>@<width>" (reports.seed002.READINGS: trained, rainbow_last_trained, rainbow_accuracy,
    # retrained_accuracy), "clip j=<j>" and "j=<j>" (the paper's layer j = l + 1); ood "" (no OOD score here)
    *(Reference("002", "cifar10", "scattering_skip", f"{row}@{width:g}", "", "top-1 accuracy", value,
                "spec seed002 §2 resampling_width (skip J8, 1 net per width)")
      for row, values in (("trained", (0.880, 0.897, 0.911, 0.916, 0.919, 0.919)),
                          ("rainbow_last_trained", (0.548, 0.672, 0.763, 0.814, 0.840, 0.847)),
                          ("retrained_accuracy", (0.6715, 0.7713, 0.8168, 0.8552, 0.8755, 0.8872)))
      for width, value in zip((0.125, 0.25, 0.5, 1, 2, 4), values)),
    Reference("002", "cifar10", "scattering", "trained@1", "", "top-1 accuracy", 0.8836,
              "spec seed002 §6 (J8, 50 seeds, wd 1e-4)"),
    Reference("002", "cifar10", "scattering4", "trained@1", "", "top-1 accuracy", 0.8094,
              "spec seed002 §2 covariance_convergence, §6 (4-block, s = 1)"),
    *(Reference("002", "cifar10_grey", model, f"{row}@1", "", "top-1 accuracy", value,
                "spec seed002 §6 (tutorial: every hidden layer resampled, trained classifier)")
      for model, row, value in (("rainbow_mlp", "trained", 0.424), ("rainbow_mlp", "rainbow_accuracy", 0.306),
                                ("rainbow_cnn", "trained", 0.574), ("rainbow_cnn", "rainbow_accuracy", 0.403))),
    *(Reference("002", "cifar10", "scattering", f"clip j={j}", "", f"d within 1% ({basis})", value,
                "spec seed002 §6 (J8, 50 seeds, ref 88.36%)")
      for j, ds in ((2, (19, 25, 217)), (3, (64, 89, 448)), (4, (51, 76, 793)), (5, (51, 153, 1689)),
                    (6, (51, 204, 1945)), (7, (51, 204, 1894)))
      for basis, value in zip(("weight", "activation", "random"), ds)),
    *(Reference("002", "cifar10", "scattering4", "clip j=2", "", f"d within 1% (weight, M = {nets})", value,
                "spec seed002 §6 (4-block, s = 1, ref 80.94%)") for nets, value in ((1, 35), (10, 44), (50, 42))),
    *(Reference("002", "cifar10", "scattering", f"j={j}", "", metric, value,
                "spec seed002 §2 marchenko_pastur (one net whitened by the 50 nets' C_j)")
      for j, colored, white in ((2, 0.211, 0.016), (4, 0.121, 0.039), (6, 0.268, 0.084))
      for metric, value in (("MP outside, colored", colored), ("MP outside, white", white))),
    *(Reference("002", "cifar10", "scattering", f"j={j}", "", f"KS p r={r}", value,
                "spec seed002 §2 gaussian_histograms_new (50 nets)")
      for (j, r), value in {(2, 1): 0.004, (2, 10): 0.46, (2, 100): 0.14, (4, 1): 0.057, (4, 10): 0.045,
                            (4, 100): 0.16, (6, 1): 0.075, (6, 10): 0.76, (6, 100): 0.49}.items()),
    # seed004: the paper's figure-level numbers could not be retrieved (spec seed004 §1, §8). The spec records the
    # NeurIPS'21 predecessor's orders of magnitude on CIFAR-10, which the paper restates (§1.5, §6, tagged [R] there):
    # R_f ~ 1 at init for every architecture, and FCNs that stay at R_f ~ 1 after training.
    *(Reference("004", "cifar10", model, "init", "", "R_f at the output, init (order)", 1.0, _SEED004_INIT)
      for model in _SEED004_NETS),
    *(Reference("004", "cifar10", model, "trained", "", "R_f at the output, trained (order)", 1.0, _SEED004_FCN)
      for model in ("fcn2", "fcn4", "fcn6")),
    # seed003: akamaster's ResNet-20 on the CIFAR-10 test split (spec seed003 §2, §5, §6, §9; repo 1's README and
    # mutual_info.py), k = 5 filters per class; the finetuned number is the README's after one epoch at lr 1e-4
    Reference("003", "cifar10", "resnet20", "full", "", "test accuracy", 0.9171, "spec seed003 §2 (repo 1 README)"),
    Reference("003", "cifar10", "resnet20", "decomposed k=5", "", "test accuracy", 0.8859,
              "spec seed003 §2, §5 (repo 1 README)"),
    Reference("003", "cifar10", "resnet20", "finetuned k=5", "", "test accuracy", 0.9130,
              "spec seed003 §2, §6 (repo 1 README: 91.30-91.40% after 1 epoch at lr 1e-4)"),
    Reference("003", "cifar10", "resnet20", "mutual information k=5", "", "MI with self-pairs (nats)",
              0.03453775959861226, "spec seed003 §2, §9 (mutual_info.py)"),
    Reference("003", "cifar10", "resnet20", "mutual information CSG k=5", "", "MI with self-pairs (nats)",
              0.03750908408724534, "spec seed003 §2, §9 (mutual_info.py, CSG smallest gates)"),
)
# why a paper's rows have no number of its own
MISSING = {"000": "seed000's paper body could not be retrieved (spec seed000 §1, §11): no row has a published number "
                  "of the paper; literature values (OpenOOD v1.5, spec ecosystem.md §1.7) are context for the MSP and "
                  "Mahalanobis rows of ResNet-18 on CIFAR, not reproduction targets",
           "004": "seed004's figure-level numbers could not be retrieved (spec seed004 §1, §8): the references are the "
                  "orders of magnitude the spec records (R_f ~ 1 at init, FCNs R_f >~ 1 trained, §1.5, §6)"}


def find(paper: str, dataset: str, model: str, row: str, ood: str, metric: str = "AUROC") -> Reference | None:
    """The reference for one cell, or None."""
    for ref in REFERENCES:
        if (ref.paper, ref.dataset, ref.model, ref.row, ref.ood, ref.metric) == (paper, dataset, model, row, ood,
                                                                                   metric):
            return ref
    return None


def reference_cell(paper: str, dataset: str, model: str, row: str | None, ood: str, metric: str = "AUROC",
                   fmt: str = ".3f") -> str:
    """The text of a report's reference column: the value (format `fmt`) and whose number it is, or "-" when
    there is none."""
    ref = find(paper, dataset, model, row, ood, metric) if row else None
    if ref is None:
        return "-"
    return f"{ref.value:{fmt}} ({'paper' if ref.kind == 'paper' else 'literature: ' + ref.label})"


def markdown(paper: str | None = None) -> str:
    """Every reference (of one paper) as a markdown table with its source."""
    rows = [ref for ref in REFERENCES if paper in (None, ref.paper)]
    lines = ["| paper | ID data | model | row | OOD set | metric | value | kind | source |", "|" + "---|" * 9]
    lines += [f"| {r.paper} | {r.dataset} | {r.model} | {r.row} | {r.ood} | {r.metric} | {r.value:.4f} | {r.kind} | "
              f"{r.source} |" for r in rows]
    return "\n".join(lines)
