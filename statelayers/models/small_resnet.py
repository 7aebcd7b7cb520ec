"""Vanilla CIFAR-style ResNets for 28–32 px images (He et al. 2016, §4.2), on timm's ResNet.

6n+2 layers of BasicBlocks at 16/32/64 channels, a 3×3 stride-1 stem and no max-pool. The
stage-changing shortcuts are timm's 1×1 conv + BN projections (the paper's option B).
"""

from __future__ import annotations

import torch
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.resnet import ResNet

from ._resnet_base import build_resnet, check_image_input, small_cfg, small_resnet_kwargs, to_small_image_stem

__all__ = ["SmallResNet"]


class SmallResNet(ResNet):
    """timm `ResNet` with the CIFAR-style stem; takes timm `ResNet` arguments."""

    min_input_size = 8

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        to_small_image_stem(self, self.in_chans)

    # timm's ResNet hard-codes four stages in these methods; this one has three
    stage_names = ("layer1", "layer2", "layer3")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_chans, self.min_input_size, type(self).__name__)
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for n in self.stage_names:
            x = getattr(self, n)(x)
        return x

    def forward_intermediates(
        self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW", intermediates_only=False
    ):
        check_image_input(x, self.in_chans, self.min_input_size, type(self).__name__)
        take, max_index = feature_take_indices(len(self.stage_names) + 1, indices)
        x = self.act1(self.bn1(self.conv1(x)))
        intermediates = [x] if 0 in take else []
        x = self.maxpool(x)
        for i, n in enumerate(self.stage_names[: max_index if stop_early else None], start=1):
            x = getattr(self, n)(x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        take, max_index = feature_take_indices(len(self.stage_names) + 1, indices)
        for n in self.stage_names[max_index:]:
            setattr(self, n, torch.nn.Sequential())
        if max_index < len(self.stage_names):
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or max_index < len(self.stage_names):
            self.reset_classifier(0, "")
        return take



default_cfgs = generate_default_cfgs({f"cifar_resnet{d}": small_cfg() for d in (20, 56, 110)})


def _create(depth: int, pretrained: bool, **kwargs) -> SmallResNet:
    return build_resnet(SmallResNet, f"cifar_resnet{depth}", pretrained, **small_resnet_kwargs(depth), **kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs) -> SmallResNet:
    return _create(20, pretrained, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs) -> SmallResNet:
    return _create(56, pretrained, **kwargs)


@register_model
def cifar_resnet110(pretrained: bool = False, **kwargs) -> SmallResNet:
    return _create(110, pretrained, **kwargs)
