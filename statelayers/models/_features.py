"""`features_only=True` for every image family: timm's feature getter, and a torch.fx graph of it for
`feature_cfg=dict(feature_cls="fx")`.

timm's own FX feature extractor (`FeatureGraphNet`) returns the outputs of the modules that `feature_info` names
(`layer1`, `blocks.3`, ...). A model that threads a state through its blocks calls the blocks one by one instead of
its stage modules, and reads the state into the tokens after a block, so those module outputs are not its features.
Here "fx" traces what timm's getter runs instead, the model's own `forward_intermediates`: the graph returns exactly
the getter's features.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn
from timm.models import FeatureInfo
from torchvision.models.feature_extraction import DualGraphModule

__all__ = ["IntermediatesNet", "feature_cfg", "feature_graph_net", "feature_indices"]


def feature_indices(n: int, indices: int | list[int] | tuple[int, ...] | None = None) -> tuple[list[int], int]:
    """The feature indices `forward_intermediates(indices=...)` means, as timm's models read them, and the largest:
    None all `n`; an int k the last k; a sequence those (negative ones counted from the end). (timm's own helper
    lives in a private module.)"""
    if indices is None:
        indices = n
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise ValueError(f"indices={indices} asks for the last {indices} of {n} features; give 1 to {n}")
        take = list(range(n - indices, n))
    else:
        take = [n + i if i < 0 else i for i in indices]
        bad = [i for i, t in zip(indices, take) if not 0 <= t < n]
        if bad or not take:
            raise ValueError(f"feature indices {list(indices)} out of range: there are {n} features (0 to {n - 1})")
    return take, max(take)


class IntermediatesNet(nn.Module):
    """The features at `out_indices` from the model's `forward_intermediates`, as timm's `FeatureGetterNet` takes
    them: the layers after the last index and the head pruned (the final norm too, unless `norm`)."""

    def __init__(self, model: nn.Module, out_indices=4, output_fmt: str = "NCHW", norm: bool = False):
        super().__init__()
        out_indices = model.prune_intermediate_layers(out_indices, prune_norm=not norm)
        self.feature_info = FeatureInfo(model.feature_info, out_indices)
        self.model, self.out_indices, self.output_fmt, self.norm = model, out_indices, output_fmt, norm

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(
            x, indices=self.out_indices, norm=self.norm, output_fmt=self.output_fmt, intermediates_only=True
        )


def feature_graph_net(model: nn.Module, **kwargs) -> torch.fx.GraphModule:
    """`IntermediatesNet(model, **kwargs)` traced by torch.fx, keeping its `feature_info` and `output_fmt`.

    Traced twice, in training and in eval mode, and switched by `.train()` / `.eval()` (torchvision's
    `DualGraphModule`, which its and timm's FX feature extractors return): a graph keeps the branches taken where
    it was traced, so one graph would apply e.g. Swin's stochastic depth in eval mode too."""
    net = IntermediatesNet(model, **kwargs)
    training = net.training
    graphs = {}
    for mode in (True, False):
        net.train(mode)
        graphs[mode] = torch.fx.Tracer().trace(net)
    graph = DualGraphModule(net, graphs[True], graphs[False], class_name="IntermediatesGraph")
    graph.train(training)
    graph.feature_info, graph.output_fmt = net.feature_info, net.output_fmt
    return graph


def feature_cfg(defaults: dict, requested: dict | None) -> dict:
    """The `feature_cfg` for timm's builder: the family's defaults, updated by the caller's own `feature_cfg`
    (`create_model(..., features_only=True, feature_cfg=dict(feature_cls="fx"))`), "fx" meaning the getter's graph."""
    cfg = {**defaults, **(requested or {})}
    if isinstance(cfg.get("feature_cls"), str) and cfg["feature_cls"].lower() == "fx":
        cfg["feature_cls"] = feature_graph_net
    return cfg
