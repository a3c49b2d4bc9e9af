"""One figure style for every report: PNG and paper-ready PDF, written atomically, no display needed."""
from __future__ import annotations

import contextlib
import csv
import io
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from utils.io import atomic_write  # noqa: E402

STYLE = {
    "figure.dpi": 110, "savefig.dpi": 200, "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
    "legend.fontsize": 8, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "lines.linewidth": 1.5, "savefig.bbox": "tight",
}


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 3.4, height: float = 2.6, **kwargs):
    """A figure of `nrows x ncols` panels, each width x height inches (a single column is ~3.4 in)."""
    plt.rcParams.update(STYLE)
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kwargs)


FORMATS = ["png", "pdf"]  # what save_figure writes; averaging.py --no-pdf leaves out the PDF (half the drawing)


@contextlib.contextmanager
def figure_formats(formats: list[str]):
    """save_figure writes `formats` inside the block, and what it wrote before after it (averaging.py --no-pdf)."""
    before = FORMATS[:]
    FORMATS[:] = formats
    try:
        yield
    finally:
        FORMATS[:] = before


def save_figure(fig, out_dir: Path, stem: str) -> Path:
    """Write `stem.png` and (unless --no-pdf) `stem.pdf` into out_dir atomically; returns the PNG path."""
    out_dir = Path(out_dir)
    fig.tight_layout()
    for ext in FORMATS:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext)
        data = buffer.getvalue()
        atomic_write(out_dir / f"{stem}.{ext}", lambda handle: handle.write(data))  # noqa: B023 - called at once
    plt.close(fig)
    return out_dir / f"{stem}.png"


STATS = ("median", "mean")   # the statistic across seeds: median with 25-75% band, or mean with +-1 std band


def summary(values: np.ndarray, stat: str = "median", axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, low, high) across seeds along `axis`, NaN ignored: median with the 25% and 75% quantiles, or mean
    with mean -+ one standard deviation (seed000 §3 computes both)."""
    values = np.asarray(values, dtype=float)
    if stat == "median":
        low, centre, high = np.nanquantile(values, [0.25, 0.5, 0.75], axis=axis)
        return centre, low, high
    if stat == "mean":
        centre, spread = np.nanmean(values, axis=axis), np.nanstd(values, axis=axis)
        return centre, centre - spread, centre + spread
    raise ValueError(f"stat must be one of {STATS}, got {stat!r}")


def band(ax, x, values: np.ndarray, label: str | None = None, stat: str = "median", per_seed: bool = False,
         **kwargs):
    """A curve across seeds (axis 0 of `values`): the median (or mean) with its band (`summary`), and with
    `per_seed` every seed's own curve, thin, in the same colour. Returns the centre line."""
    values = np.asarray(values, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN columns (a layer not measured) stay NaN
        centre, low, high = summary(values, stat)
    (line,) = ax.plot(x, centre, label=label, **kwargs)
    if len(values) > 1:
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    if per_seed:
        for row in values:
            ax.plot(x, row, color=line.get_color(), linewidth=0.6, alpha=0.5, linestyle=line.get_linestyle())
    return line


def median_band(ax, x, values: np.ndarray, label: str | None = None, **kwargs):
    """Median across seeds (axis 0) with the 25-75% quantile band (seed000 §3 statistics)."""
    return band(ax, x, values, label=label, **kwargs)


def vertical_line(ax, x: float | None, label: str | None = None) -> None:
    """A dashed grey vertical line at x (e.g. seed000's transition layer), labelled in the legend; nothing for None."""
    if x is not None:
        ax.axvline(x, color="0.4", linestyle="--", linewidth=1.0, label=label)


def legend(ax, title: str | None = None, outside: bool = False, **kwargs) -> None:
    """The panel's legend when it has labelled artists; `outside` puts it right of the axes (many entries)."""
    if not ax.get_legend_handles_labels()[0]:
        return
    if outside:
        kwargs = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0, **kwargs}
    ax.legend(title=title, **kwargs)


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    """A table as CSV, atomically (the machine-readable twin of `markdown_table`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode()
    return atomic_write(path, lambda handle: handle.write(data))


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
