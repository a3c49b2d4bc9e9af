"""The Gram data of seed000 §6.4 at the paper's n = 10,000 samples without holding every layer's features.

analyzing.py keeps the first n samples' features of every layer of the original network. Held in memory, that
is n x sum_l d_l floats: 6 GB for ResNet-18 at width 0.25 on 32x32 images. Here each batch's rows are appended
to one raw file per layer, and each layer's stored form (features when d < n, else the n x n linear Gram) is
formed only when the .npz writer reaches it (utils.io.Deferred), so memory holds one layer's result at a time.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from pipeline.contract import layer_key
from utils.io import Deferred

BLOCK_BYTES = 2 ** 28  # rows of float64 read per Gram block: 256 MB (two blocks and the n x n result in memory)


class SpilledRows:
    """Per-layer feature rows on disk in `folder` (removed on exit), read back in row blocks."""

    def __init__(self, folder: Path, layers: int, device: torch.device, block_bytes: int = BLOCK_BYTES):
        self.folder, self.device, self.block_bytes = Path(folder), device, block_bytes
        self.paths = [self.folder / f"{layer_key(index, 'layer')}.raw" for index in range(layers)]
        self.widths: list[int] = [0] * layers
        self.dtype: np.dtype | None = None
        self.rows = 0

    def __enter__(self) -> SpilledRows:
        shutil.rmtree(self.folder, ignore_errors=True)  # what a killed run left
        self.folder.mkdir(parents=True)
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def append(self, heads: list[torch.Tensor]) -> None:
        """Add the same samples' features of every layer (each (rows, ...))."""
        for index, head in enumerate(heads):
            flat = head.detach().flatten(1).cpu().numpy()
            self.widths[index], self.dtype = flat.shape[1], flat.dtype
            with open(self.paths[index], "ab") as handle:
                handle.write(np.ascontiguousarray(flat).tobytes())
        self.rows += len(heads[0])

    def read(self, index: int, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop-1 of layer `index`, float64 on the device."""
        width = self.widths[index]
        rows = np.fromfile(self.paths[index], dtype=self.dtype, count=(stop - start) * width,
                           offset=start * width * self.dtype.itemsize)
        return torch.from_numpy(rows.reshape(stop - start, width)).to(self.device, torch.float64)

    def gram(self, index: int) -> torch.Tensor:
        """X X^T (n, n) float64 of layer `index`, from blocks of rows (the upper blocks, mirrored)."""
        n = self.rows
        step = max(1, self.block_bytes // (8 * self.widths[index]))
        starts = range(0, n, step)
        K = torch.empty(n, n, dtype=torch.float64)
        for i in starts:
            rows_i = self.read(index, i, min(i + step, n))
            for j in starts[i // step:]:
                block = (rows_i @ self.read(index, j, min(j + step, n)).T).cpu()
                K[i:i + step, j:j + step] = block
                K[j:j + step, i:i + step] = block.T
        return K

    def gram_data(self) -> dict[str, Deferred]:
        """feat_<ll> (n, d) when d < n, else gram_<ll> = X X^T (n, n), float64 (the cheaper form), each computed
        when written."""
        n = self.rows
        arrays = {}
        for index, d in enumerate(self.widths):
            if d < n:
                arrays[layer_key(index, "feat")] = Deferred(lambda index=index: self.read(index, 0, n))
            else:
                arrays[layer_key(index, "gram")] = Deferred(lambda index=index: self.gram(index))
        return arrays
