"""RLA-Net baseline (Zhao et al., "Recurrence along Depth", NeurIPS 2021; design note s6la.md §5.1).

A state `h ∈ (B, k, H, W)` with `k = rla_channel` runs alongside the feature maps, exactly as in
S6LA, but its update is a shared recurrent conv instead of a selective SSM step:

    h^0 = 0                                                  at the stem-output resolution, not learned
    block t of stage s reads [X^{t-1}, h^{t-1}] through its widened first conv; O = residual branch
    h   = AvgPool(h)                                         in the stride-2 block of a stage
    h^t = recurrent_conv_s(tanh(BN_{s,j}(h + conv_out_s(O))))

`conv_out_s` (1×1, C_s → k) and `recurrent_conv_s` (3×3, k → k) are shared by the blocks of stage
`s`; every block has its own `BN_{s,j}` (stored on the block as `rla_norm`). The head reads
`fc(GAP(cat[X, ReLU(BN(h))]))`, so the fc has `C + k` inputs.

The official code (joyfang1106/RLANet, `models/resnet_rla.py`) only has a Bottleneck version.
The BasicBlock models (`rla_cifar_resnet*`, and `RLAResNet(block=BasicBlock, ...)`) are our
adaptation: `[X, h]` enters the block's first 3×3 conv, as in S6LA, and `k` defaults to 16 for
the CIFAR-style nets, whose first stage is only 16 channels wide.

Differences from the official code:
* Init follows the official code, not timm: the last BN of each residual branch is *not*
  zero-initialised (`zero_init_last=False` by default here; the official `RLA_ResNet` has
  `zero_init_residual=False` and its train.py keeps it). With timm's zeroed BNs
  (`zero_init_last=True`) every `O` is 0 at init, so `h` stays exactly 0 and the whole state path
  gets a zero gradient on the first step.
* `h` is pooled with ceil mode (and no padding in the average) so that odd input sizes work; for
  even sizes this equals the official `AvgPool2d(2, 2)`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from ._resnet_base import ARCHS, StatefulResNet, build_resnet, imagenet_cfg, small_cfg, small_resnet_kwargs

__all__ = ["RLAResNet"]


class RLAResNet(StatefulResNet):
    """timm ResNet with RLA (recurrent layer aggregation).

    Args:
        rla_channel: k, channels of the state `h` (official default 32).
        head_concat: the head also reads `ReLU(BN(h))` (official: always). When False, the update
            after the last block is not built, since nothing would read it.
        small_image: CIFAR-style stem for 28–32 px images.
        **kwargs: timm `ResNet` arguments (block, layers, num_classes, in_chans, drop_path_rate, ...).
    """

    def __init__(self, *, rla_channel: int = 32, head_concat: bool = True, small_image: bool = False, **kwargs):
        if rla_channel < 1:
            raise ValueError(f"rla_channel must be positive, got {rla_channel}")
        super().__init__(state_chs=rla_channel, small_image=small_image, head_concat=head_concat, **kwargs)
        self.rla_channel = rla_channel
        stage_chs = [info["num_chs"] for info in self.feature_info[1:]]
        self.conv_out = nn.ModuleList(nn.Conv2d(c, rla_channel, 1, bias=False) for c in stage_chs)
        self.recurrent_conv = nn.ModuleList(
            nn.Conv2d(rla_channel, rla_channel, 3, padding=1, bias=False) for _ in stage_chs
        )
        for conv in [*self.conv_out, *self.recurrent_conv]:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        last = self.stages()[-1][-1]
        for block in self.blocks():
            if block is last and not head_concat:
                continue
            block.rla_norm = nn.BatchNorm2d(rla_channel)  # γ=1, β=0 by default

    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        b, _, hh, ww = x.shape
        return x.new_zeros(b, self.rla_channel, hh, ww)

    def state_input(self, out, stage, block, hidden):
        return self.conv_out[stage](out) if hasattr(block, "rla_norm") else None

    def update_state(self, h, u, stage, index, block):
        if u is None:
            return h
        return self.recurrent_conv[stage](torch.tanh(block.rla_norm(h.to(u.dtype) + u)))



RLA_PAPER = dict(
    paper_ids="arXiv:2110.11852",
    paper_name="Recurrence along Depth: Deep Convolutional Neural Networks with Recurrent Layer Aggregation",
)

default_cfgs = generate_default_cfgs(
    {
        **{f"rla_resnet{d}": imagenet_cfg(**RLA_PAPER) for d in (50, 101, 152)},
        **{f"rla_cifar_resnet{d}": small_cfg(**RLA_PAPER) for d in (20, 56, 110)},
    }
)


def _create(variant: str, pretrained: bool = False, **kwargs) -> RLAResNet:
    kwargs.setdefault("zero_init_last", False)  # the official RLA init
    return build_resnet(RLAResNet, variant, pretrained, **kwargs)


def _imagenet(depth: int, pretrained: bool, **kwargs) -> RLAResNet:
    block, layers = ARCHS[depth]
    return _create(f"rla_resnet{depth}", pretrained, block=block, layers=layers, **kwargs)


def _small(depth: int, pretrained: bool, **kwargs) -> RLAResNet:
    # k=16 by default here: the first stage is only 16 channels wide (as s6la_cifar's d_state)
    kwargs.setdefault("rla_channel", 16)
    return _create(
        f"rla_cifar_resnet{depth}", pretrained, small_image=True, **small_resnet_kwargs(depth), **kwargs
    )


@register_model
def rla_resnet50(pretrained: bool = False, **kwargs) -> RLAResNet:
    return _imagenet(50, pretrained, **kwargs)


@register_model
def rla_resnet101(pretrained: bool = False, **kwargs) -> RLAResNet:
    return _imagenet(101, pretrained, **kwargs)


@register_model
def rla_resnet152(pretrained: bool = False, **kwargs) -> RLAResNet:
    return _imagenet(152, pretrained, **kwargs)


@register_model
def rla_cifar_resnet20(pretrained: bool = False, **kwargs) -> RLAResNet:
    return _small(20, pretrained, **kwargs)


@register_model
def rla_cifar_resnet56(pretrained: bool = False, **kwargs) -> RLAResNet:
    return _small(56, pretrained, **kwargs)


@register_model
def rla_cifar_resnet110(pretrained: bool = False, **kwargs) -> RLAResNet:
    return _small(110, pretrained, **kwargs)
