"""One figure style for every report: paper-ready PNG + PDF, written atomically, no display needed."""
from __future__ import annotations

import csv
import io
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


def save_figure(fig, out_dir: Path, stem: str) -> Path:
    """Write `stem.png` and `stem.pdf` into out_dir atomically; returns the PNG path."""
    out_dir = Path(out_dir)
    fig.tight_layout()
    for ext in ("pdf", "png"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext)
        data = buffer.getvalue()
        atomic_write(out_dir / f"{stem}.{ext}", lambda handle: handle.write(data))  # noqa: B023 - called at once
    plt.close(fig)
    return out_dir / f"{stem}.png"


def median_band(ax, x, values: np.ndarray, label: str | None = None, **kwargs):
    """Median across seeds (axis 0) with the 25-75% quantile band (seed000 §3 statistics)."""
    values = np.asarray(values, dtype=float)
    median = np.nanmedian(values, axis=0)
    low, high = np.nanquantile(values, [0.25, 0.75], axis=0)
    (line,) = ax.plot(x, median, label=label, **kwargs)
    if len(values) > 1:
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


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
