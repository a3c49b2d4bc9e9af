"""Rainbow sampling of rainbow.py (seed002 §5.4): K rainbow nets in lockstep, the M trained nets' mean
representation computed once per batch and shared, every pass stopped at the layer it feeds, vs the straightforward
per-net loop (issue 18 item 7).

Toolkit: `rainbow_nets.rainbow_networks`: per layer l, ONE train pass of the M trained nets (truncated at layer l) whose
mean representation feeds the K rainbow nets' accumulators (M + K truncated passes per layer). Reference: the code
before issue 18, kept here: for each rainbow net and each layer, a train pass of all M trained nets and of the
rainbow net through every layer (K (M + 1) full passes per layer). The full grid (50 nets, 10 samples, 9 layers) is
4,590 full train passes in the reference and 540 truncated ones in the toolkit. Both draw the same weights and
must give the same accuracies (top-1, top-5 per layer) and the same final rainbow weights (diff = their largest
relative difference). The nets are registry models with PyTorch's initialisation (seeds 0..M-1) on the bundled
digits: timings, not accuracies, are the point.

    python benchmarks/run_all.py --only rainbow                  # 8 rainbow_cnn nets, 4 samples
    python benchmarks/run_all.py --only rainbow --size large     # 6 BN scattering4 nets (width 1/8), 4 samples
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from benchmarks.common import Result, best_time
from datasets import build_dataset
from measures import alignment as al
from models import build_model
from pipeline import rainbow_nets
from pipeline.loaded import LoadedRun
from utils.rundir import RunDir

SIZES = {"default": dict(model="rainbow_cnn", width=1.0, nets=8, samples=4, images=1437),
         "large": dict(model="scattering4", width=0.125, nets=6, samples=4, images=500)}


def setup(cfg: dict, device: torch.device):
    """(nets, aligners, draws, mean classifier, data) as rainbow.main builds them, for untrained registry models."""
    train = build_dataset("digits", "train")
    test = build_dataset("digits", "test")
    config = {"model": {"name": cfg["model"], "outputs": 10, "num_classes": 10, "in_channels": 3, "image_size": 32,
                        "width": cfg["width"]},
              "data": {"name": "digits", "mean": list(train.mean), "std": list(train.std)},
              "recipe": {"name": "seed002", "loss": "cross_entropy"}}
    nets = []
    for seed in range(cfg["nets"]):
        torch.manual_seed(seed)
        model = build_model(cfg["model"], 10, width=cfg["width"]).to(device).eval()
        nets.append(rainbow_nets.Net(LoadedRun(RunDir(f"/nonexistent/rnd{seed}"), model, config, 0, "weights", device)))
    n = cfg["images"]
    splits = {split: replace(data, images=data.images[:n].to(device), labels=data.labels[:n].to(device))
              for split, data in (("train", train), ("test", test))}
    data = rainbow_nets.Data(nets[0].loaded, splits, rainbow_nets.BATCH)
    aligners = rainbow_nets.align_nets(nets, data, num_iters=1)
    L, K = len(nets[0].layers), cfg["samples"]
    generator = torch.Generator(device).manual_seed(0)
    draws = []
    for j in range(L - 1):
        values, vectors = al.weight_spectrum(rainbow_nets.aligned_weights(nets, aligners, j))
        draws.append(al.sample_from_spectrum(values, vectors, K * nets[0].layers[j].weight.shape[0],
                                             generator).chunk(K))
    mean_classifier = sum(rainbow_nets.aligned_weights(nets, aligners, L - 1)) / len(nets)
    return nets, aligners, [[d[k] for d in draws] for k in range(K)], mean_classifier, data


# ---- the reference: rainbow.py before issue 18 item 7 ------------------------------------------------------------
def reference_alignment(nets, aligner, new, data, j):
    """A_new at layer j from one train pass of the M trained nets and of this rainbow net, every layer computed."""
    acc = al.CovarianceAccumulator()
    for x, _ in data.batches("train"):
        mean = aligner.mean_activation([net.layer_inputs(x)[j] for net in nets])
        acc.update(mean, al.as_samples(new.layer_inputs(x)[j]))
    return rainbow_nets.restandardise(new, j, acc.compute())


def reference_networks(nets, aligners, draws, mean_classifier, data):
    """(top-1 (K, L), top-5 (K, L), rainbow nets), one rainbow net after the other."""
    last = len(nets[0].layers) - 1
    top1, top5, news = np.zeros((len(draws), last + 1)), np.zeros((len(draws), last + 1)), []
    for k, sample in enumerate(draws):
        new = nets[0].copy()
        for j in range(last + 1):
            A_new = None if j == 0 else reference_alignment(nets, aligners[j], new, data, j)

            def transport(weight, A_new=A_new):
                return weight if A_new is None else al.weight_from_reference(weight, A_new)

            reference = mean_classifier if j == last else rainbow_nets.aligned_weights(nets[:1], aligners, j)[0]
            new.set_weight(j, transport(reference))
            top1[k, j], top5[k, j] = rainbow_nets.evaluate(new, data)
            if j < last:
                new.set_weight(j, transport(sample[j].reshape(nets[0].weight(j).shape)))
        news.append(new)
    return top1, top5, news


@torch.no_grad()
def difference(a, b) -> float:
    """Largest relative difference between two results (accuracies, then every rainbow weight)."""
    diffs = [float(np.abs(a[0] - b[0]).max()), float(np.abs(a[1] - b[1]).max())]
    for new_a, new_b in zip(a[2], b[2]):
        for layer_a, layer_b in zip(new_a.layers, new_b.layers):
            scale = layer_b.weight.abs().max().clamp_min(1e-300)
            diffs.append(float((layer_a.weight - layer_b.weight).abs().max() / scale))
    return max(diffs)


def run(size: str, device: torch.device) -> list[Result]:
    cfg = SIZES[size]
    nets, aligners, draws, mean_classifier, data = setup(cfg, device)
    args = (nets, aligners, draws, mean_classifier, data)
    diff = difference(rainbow_nets.rainbow_networks(*args), reference_networks(*args))
    toolkit = best_time(lambda: rainbow_nets.rainbow_networks(*args), device, repeat=1, warmup=0)
    reference = best_time(lambda: reference_networks(*args), device, repeat=1, warmup=0)
    L, M, K = len(nets[0].layers), cfg["nets"], cfg["samples"]
    return [Result(f"rainbow sampling {cfg['model']} M={M} K={K} L={L}", toolkit, reference, diff,
                   note=f"train passes {L * (M + K)} truncated vs {K * L * (M + 1)} full; "
                        f"{len(data.splits['train'])} images")]
