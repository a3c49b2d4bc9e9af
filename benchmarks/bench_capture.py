"""Feature capture: one hooked forward pass for all analysis layers vs one forward pass per layer."""
from __future__ import annotations

import torch

from benchmarks.common import Result, best_time, max_rel_diff
from models import build_model
from utils.taps import LayerTaps

SIZES = {"default": dict(width=0.5, batch=128), "large": dict(width=1.0, batch=256)}


def run(size: str, device: torch.device) -> list[Result]:
    cfg = SIZES[size]
    torch.manual_seed(0)
    model = build_model("resnet18", 10, width=cfg["width"]).to(device).eval()
    x = torch.randn(cfg["batch"], 3, 32, 32, device=device)
    layers = model.weight_layers()

    @torch.no_grad()
    def one_pass():
        with LayerTaps(layers, reduce=lambda i, t: t.sum(dim=tuple(range(1, t.dim())))) as taps:
            model(x)
        return torch.stack(taps.values)

    @torch.no_grad()
    def pass_per_layer():
        sums = []
        for layer in layers:
            with LayerTaps([layer], reduce=lambda i, t: t.sum(dim=tuple(range(1, t.dim())))) as taps:
                model(x)
            sums.append(taps.values[0])
        return torch.stack(sums)

    diff = max_rel_diff(one_pass(), pass_per_layer())
    return [Result(f"feature capture resnet18 ({len(layers)} layers)", best_time(one_pass, device),
                   best_time(pass_per_layer, device, repeat=1), diff)]
