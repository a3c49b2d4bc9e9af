"""Capture the inputs (or outputs) of any list of modules in ONE forward pass (DESIGN.md, "Layers").

"Layer i" is the input of the i-th weight layer, so a stage taps `model.weight_layers()` (or
`models.layers.analysis_layers(model, x)` for any nn.Module) and reads `taps.values[i]` after a forward
pass. A `reduce` callback turns each captured tensor into what the stage keeps (a spatial sum, a running
statistic), so the activations of a whole dataset are never stored.

    with LayerTaps(model.weight_layers()) as taps:
        logits = model(x)
    feats = taps.values            # list of tensors, one per layer, (B, C, H, W) or (B, D)

`NodeTaps(model, by_layer=True)(x)` returns every node of a traced network instead (seed004 §2.4: each conv,
norm, activation, pooling and residual add, evaluated out of place so that each keeps its own value; or, with
nodes="original", the original code's nodes and values, in-place ReLUs included).
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Sequence

import torch
from torch import nn

from utils.errors import ToolkitError


class LayerTaps:
    """Forward hooks that record the first positional input (default) or the output of each module."""

    def __init__(
        self,
        modules: Sequence[nn.Module],
        reduce: Callable[[int, torch.Tensor], object] | None = None,
        capture: str = "input",
        detach: bool = True,
    ):
        if capture not in ("input", "output"):
            raise ValueError("capture must be 'input' or 'output'")
        self.modules = list(modules)
        self.reduce = reduce
        self.capture = capture
        self.detach = detach
        self.values: list[object] = [None] * len(self.modules)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> LayerTaps:
        for index, module in enumerate(self.modules):
            self._handles.append(module.register_forward_hook(self._hook(index)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, index: int):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            value = inputs[0] if self.capture == "input" else output
            if self.detach:
                value = value.detach()
            self.values[index] = self.reduce(index, value) if self.reduce else value

        return hook


def spatial_mean(index: int, tensor: torch.Tensor) -> torch.Tensor:
    """A `reduce` for LayerTaps: conv maps (B, C, H, W) -> per-channel spatial means (B, C); (B, D) unchanged."""
    return tensor.mean(dim=(2, 3)) if tensor.dim() == 4 else tensor


@torch.no_grad()
def capture_inputs(model: nn.Module, modules: Sequence[nn.Module], x: torch.Tensor) -> tuple[list, torch.Tensor]:
    """One forward pass of `model` on `x`; returns (inputs of each module, model output)."""
    with LayerTaps(modules) as taps:
        output = model(x)
    return taps.values, output


# ---- every node of a network (seed004 §2.4) --------------------------------------------------------------------------
LEAF_BASES = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._NormBase)   # one node even when subclassed
LAYOUT_MODULES = (nn.Identity, nn.modules.dropout._DropoutNd, nn.Flatten, nn.Unflatten, nn.ZeroPad2d)
LAYOUT_OPS = ("flatten", "view", "reshape", "squeeze", "unsqueeze", "contiguous", "size", "dim", "numel",
              "getattr", "dropout", "type", "to", "float", "double")
ORIGINAL_DROPPED = ("size", "sub", "floordiv", "numel", "pow")  # substrings the original dropped (§2.4)
POOL_MODULES = (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AvgPoolNd,
                nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._MaxPoolNd)
POOL_OPS = ("adaptive_avg_pool2d", "avg_pool2d", "adaptive_max_pool2d", "max_pool2d", "mean")
IN_PLACE = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
            operator.itruediv: operator.truediv}


def _feature_extraction():
    """torchvision's fx feature extraction, imported when a NodeTaps traces (about 1 s: LayerTaps users skip it)."""
    from torchvision.models import feature_extraction

    return feature_extraction


def _op_name(target) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


NODE_SETS = ("ours", "original")   # NodeTaps(nodes=...): the toolkit's nodes (default) or the original's (§2.4)


class NodeTaps:
    """The nodes of §2.4 of one network (module docstring): `taps(x)` -> {name: (B, ...) tensor} in forward order,
    the last "output"; `taps(x, names)` only those nodes. With by_layer=False only {"output": model(x)}.

    nodes="ours" (the default): in-place ops are evaluated out of place, so a conv or BN node keeps its own value,
    and nodes that only re-lay out the input (ZeroPad2d) or pool a map to its own shape (VGG's global pool of a 1x1
    map) are dropped. nodes="original": the relativestability code's nodes, as its create_feature_extractor gives
    them on diffeo-sota's nets: in-place ops stay in place, so a conv or BN node feeding an in-place ReLU returns the
    post-ReLU tensor, and the ZeroPad2d and shape-keeping pooling nodes are kept (VGG's features end with
    AvgPool2d(kernel_size=1)), so node indices match the paper's figures (the names stay this toolkit's).

    The graph is traced once (torchvision's feature extractor over every node); the nodes to keep are settled on
    the first call (`settle`: a few probes suffice), from the node types and the shapes that call produced, and an
    extractor is built for each set of nodes asked for."""

    def __init__(self, model: nn.Module, by_layer: bool, nodes: str = "ours"):
        if nodes not in NODE_SETS:
            raise ValueError(f"nodes must be one of {NODE_SETS}, got {nodes!r}")
        self.model = model
        self.by_layer = by_layer
        self.original = nodes == "original"
        self.names: list[str] | None = None   # kept node names, "output" last
        self.sample_bytes: dict[str, int] = {}   # name -> bytes of one probe's value
        self._internal: dict[str, str] = {}      # name -> fx node name
        self._extractors: dict[tuple[str, ...], object] = {}
        if by_layer:
            if not self.original:
                for module in model.modules():   # evaluated out of place: each node keeps its own value
                    if hasattr(module, "inplace"):
                        module.inplace = False
            leaves = sorted({type(m) for m in model.modules() if isinstance(m, LEAF_BASES)
                             and not type(m).__module__.startswith("torch.nn")}, key=lambda c: c.__qualname__)
            self._tracer = {"leaf_modules": leaves}
            try:
                _, self._all = _feature_extraction().get_graph_node_names(model, tracer_kwargs=self._tracer)
            except Exception as err:  # noqa: BLE001 - torch.fx raises many types on untraceable code
                raise ToolkitError(f"--by_layer traces the network with torch.fx, which failed for this model "
                                   f"({type(err).__name__}: {str(err).splitlines()[0][:120]}); measure the output "
                                   "only (drop --by_layer)") from err

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        if not self.by_layer:
            return {"output": self.model(x)}
        if self.names is None:
            self.settle(x)
        wanted = tuple(self.names if names is None else names)
        extractor = self._extractors.get(wanted)
        if extractor is None:
            extractor = self._extractors[wanted] = self._build([self._internal[name] for name in wanted])
        found = extractor(x)
        return {name: found[self._internal[name]] for name in wanted}

    def groups(self, batch: int, budget: float) -> list[list[str]]:
        """The kept nodes in forward order, cut into consecutive groups whose values for three passes of `batch`
        probes (x, tau x, x + eta) take at most `budget` bytes (a node larger than that is a group of its own)."""
        out: list[list[str]] = []
        used = 0.0
        for name in self.names:
            need = 3 * batch * self.sample_bytes[name]
            if not out or used + need > budget:
                out.append([])
                used = 0.0
            out[-1].append(name)
            used += need
        return out

    def _build(self, names: list[str]):
        extractor = _feature_extraction().create_feature_extractor(self.model, return_nodes=names,
                                                                   tracer_kwargs=self._tracer)
        if self.original:   # the graph as traced, in-place ops included
            return extractor.eval()
        for graph in (extractor.train_graph, extractor.eval_graph):
            for node in graph.nodes:
                if node.op == "call_function" and node.target in IN_PLACE:
                    node.target = IN_PLACE[node.target]
                elif node.op == "call_method" and node.target.endswith("_") and not node.target.startswith("_"):
                    node.target = node.target[:-1]
                elif node.op == "call_function" and _op_name(node.target).endswith("_") \
                        and hasattr(torch, _op_name(node.target)[:-1]):
                    node.target = getattr(torch, _op_name(node.target)[:-1])
                if node.kwargs.get("inplace"):
                    node.kwargs = {**node.kwargs, "inplace": False}
        extractor.eval()
        extractor.graph = extractor.eval_graph   # recompiles the patched graph
        return extractor

    @torch.no_grad()
    def settle(self, x: torch.Tensor) -> None:
        """Choose the kept nodes from one forward pass of `x` (every node's value; a few probes suffice) and record
        each node's size per probe (`sample_bytes`)."""
        extractor = self._build(self._all)
        found = extractor(x)
        returned = next(node for node in extractor.eval_graph.nodes if node.op == "output").args[0]  # name -> node
        values_of = {returned[name].name: value for name, value in found.items()}
        output = self.model(x)
        kept = [name for name in self._all if self._keeps(extractor, returned[name], found[name], values_of, x)]
        last = next((name for name in reversed(kept) if torch.equal(found[name], output)), None)
        if last is None:
            raise ToolkitError("--by_layer found no node that yields the network's output; drop --by_layer")
        kept = kept[:kept.index(last) + 1]
        self.names = [*kept[:-1], "output"]
        self._internal = dict(zip(self.names, kept))
        self.sample_bytes = {name: found[node][:1].numel() * found[node].element_size()
                             for name, node in self._internal.items()}

    def _keeps(self, extractor, node, value, values_of: dict, x: torch.Tensor) -> bool:
        if node.op in ("placeholder", "get_attr", "output"):
            return False
        if not isinstance(value, torch.Tensor) or value.dim() < 1 or value.shape[0] != x.shape[0]:
            return False
        if node.op == "call_module":
            module = extractor.get_submodule(node.target)
            if isinstance(module, LAYOUT_MODULES) and not (self.original and isinstance(module, nn.ZeroPad2d)):
                return False
            pooling = isinstance(module, POOL_MODULES)
        else:
            name = _op_name(node.target)
            if name in LAYOUT_OPS or any(part in node.name for part in ORIGINAL_DROPPED):
                return False
            pooling = name in POOL_OPS
        if pooling and not self.original:   # a pooling that keeps its input's shape (a global pool of a 1x1 map)
            source = node.args[0]
            before = values_of.get(getattr(source, "name", None), x if getattr(source, "op", "") == "placeholder"
                                   else None)
            if before is not None and before.flatten(1).shape == value.flatten(1).shape:
                return False
        return True
