"""Per-paper extraction (run -> compact scores) and averaging (seeds -> figures, tables, report section).

extractor.py and averaging.py are thin loops over the paper modules listed in PAPERS. Each module
`reports/<paper>.py` defines:

    TITLE: str                                        heading of its report section
    FORMAT: int                                       version of its extract file's layout; a run extracted in
                                                      another is extracted again (extractor.py's flags)
    def has_outputs(run: RunDir) -> bool              the run holds this paper's stage outputs
    def extract(run, out) -> dict                     write the paper's extract file through `out` (the extract
                                                      stage's pipeline.contract.StageOutput); return a summary
    def average(groups: list[Group], out: Path) -> str
        figures (PNG + PDF via reports.figures.save_figure) and CSV tables into `out`;
        returns the markdown section of report.md (figures referenced relative to `out`).

A `Group` is one (dataset, model) with the runs whose extract/ is done, so averaging is across seeds.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from utils.rundir import RunDir

PAPERS = ("seed000", "seed004", "seed003", "seed002")


@dataclass(frozen=True)
class Group:
    dataset: str
    model: str
    runs: tuple[RunDir, ...]

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.model}"


@dataclass(frozen=True)
class ReportOptions:
    oracle: bool = False  # seed000's figures choose on the reported near-OOD set (§10), not on validation
    mean_std: bool = False   # also mean +- std beside median (IQR): table cells and `-mean` twins of the figures
    per_seed: bool = False   # draw every seed's own curve beside the statistic across seeds


def paper_modules() -> list[ModuleType]:
    """The paper modules implemented so far, in PAPERS order."""
    modules = []
    for name in PAPERS:
        try:
            modules.append(importlib.import_module(f"reports.{name}"))
        except ModuleNotFoundError as err:
            if err.name != f"reports.{name}":
                raise
    return modules
