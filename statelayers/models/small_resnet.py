"""Vanilla CIFAR-style ResNets for 28–32 px images (He et al. 2016, §4.2), on timm's ResNet.

6n+2 layers of BasicBlocks at 16/32/64 channels, a 3×3 stride-1 stem and no max-pool. The
stage-changing shortcuts are timm's 1×1 conv + BN projections (the paper's option B).
"""

from __future__ import annotations

from timm.models import generate_default_cfgs, register_model

from ._resnet_base import StagedResNet, build_resnet, small_cfg, small_resnet_kwargs

__all__ = ["SmallResNet"]


class SmallResNet(StagedResNet):
    """timm `ResNet` with the CIFAR-style stem; takes timm `ResNet` arguments."""

    def __init__(self, **kwargs):
        super().__init__(small_image=True, **kwargs)



# He et al. 2016, whose §4.2 defines these networks
RESNET_PAPER = dict(paper_ids="arXiv:1512.03385", paper_name="Deep Residual Learning for Image Recognition")

default_cfgs = generate_default_cfgs({f"cifar_resnet{d}": small_cfg(**RESNET_PAPER) for d in (20, 56, 110)})


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
