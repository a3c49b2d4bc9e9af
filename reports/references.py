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
                  "Mahalanobis rows of ResNet-18 on CIFAR, not reproduction targets"}


def find(paper: str, dataset: str, model: str, row: str, ood: str, metric: str = "AUROC") -> Reference | None:
    """The reference for one cell, or None."""
    for ref in REFERENCES:
        if (ref.paper, ref.dataset, ref.model, ref.row, ref.ood, ref.metric) == (paper, dataset, model, row, ood,
                                                                                   metric):
            return ref
    return None


def reference_cell(paper: str, dataset: str, model: str, row: str | None, ood: str, metric: str = "AUROC",
                   fmt: str = ".3f") -> str:
    """The text of a report's reference column: the value (format `fmt`) and whose number it is, or "-"."""
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
