"""MRLA-light baseline (Fang et al., "Cross-Layer Retrospective Retrieving via Layer Attention",
ICLR 2023, eq. 6; design note s6la.md §5.2).

No state is concatenated into the blocks. Every standard timm block is followed by a light
layer-attention step that reads the block output `X` and the block's shortcut `S` (which stands
in for the previous attention output `o_{t-1}`):

    y    = GAP(X)                                  a length-C sequence per sample
    Q, K = Conv1d_k(y), Conv1d_k(y)                two ECA-style convs, no bias, k from the ECA formula
    V    = DWConv3×3(X)
    a_g  = sigmoid(Q_g · K_g / √(C/G))             one gate per head g of C/G channels
    X   <- X + DropPath(BN_mrla(V ⊙ a + λ ⊙ S))    λ ∈ R^{C×1×1} ~ randn, BN_mrla γ=1 (not zeroed)

The blocks are subclasses of timm's `BasicBlock`/`Bottleneck` whose forward runs the block's own
submodules (`residual_branch`), computes the shortcut once and hands it to the MRLA step, so
`layerN` stays an `nn.Sequential` and vanilla timm checkpoints load with `strict=False`. The
parameter names follow the official code (`mrla.mrla.Wq/Wk/Wv`, `mrla.lambda_t`, `bn_mrla`).

Heads: the official code uses C/32 heads of 32 channels. For the CIFAR-style nets (16/32/64
channels) that gives 0 heads at C=16, so heads = max(1, C // 32) here: one head of 16 channels
in the first stage, one of 32 in the second, two of 32 in the third. For C ≥ 32 and C divisible
by 32 this equals the official rule.

Differences from the official code (joyfang1106/MRLA, `resnet/models/resnet_mrla_light.py`):
* stochastic depth: the official blocks drop only the MRLA term, with one rate for all blocks.
  Here the residual branch keeps timm's DropPath and the MRLA term gets its own DropPath with
  the same (timm, linearly increasing) per-block rate.
* the BasicBlock models (`mrla_cifar_resnet*`) are our adaptation; the official code has only
  a Bottleneck version.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath
from timm.models import generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck

from ._mrla_base import MRLA_PAPER, eca_kernel_size
from ._resnet_base import (
    ARCHS,
    StagedResNet,
    block_act,
    block_shortcut,
    build_resnet,
    imagenet_cfg,
    residual_branch,
    small_cfg,
    small_resnet_kwargs,
)

# eca_kernel_size lives in _mrla_base (the MRLA DeiT shares it); still importable from here
__all__ = ["MRLALightAttention", "MRLALight", "MRLABasicBlock", "MRLABottleneck", "MRLAResNet", "eca_kernel_size"]


class MRLALightAttention(nn.Module):
    """`V ⊙ a`: a depthwise 3×3 conv of the input, gated per head by sigmoid(Q·K/√d) where Q, K
    are ECA-style 1-D convs over the channel descriptor GAP(x)."""

    def __init__(self, dim: int, heads: int, kernel_size: int | None = None, device=None, dtype=None):
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"MRLA heads must divide the {dim} channels, got {heads}")
        dd = dict(device=device, dtype=dtype)
        k = eca_kernel_size(dim) if kernel_size is None else kernel_size
        self.dim, self.heads, self.kernel_size = dim, heads, k
        self.scale = (dim // heads) ** -0.5
        self.Wq = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False, **dd)
        self.Wk = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False, **dd)
        self.Wv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False, **dd)
        nn.init.kaiming_normal_(self.Wv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        y = x.mean(dim=(2, 3)).unsqueeze(1)  # (B, 1, C)
        q = self.Wq(y).reshape(b, self.heads, c // self.heads)
        k = self.Wk(y).reshape(b, self.heads, c // self.heads)
        gate = torch.sigmoid((q * k).sum(-1, keepdim=True) * self.scale)  # (B, G, 1)
        gate = gate.expand(b, self.heads, c // self.heads).reshape(b, c, 1, 1)
        return self.Wv(x) * gate

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, kernel_size={self.kernel_size}"


class MRLALight(nn.Module):
    """`o = V ⊙ a + λ ⊙ o_prev`, with λ ∈ R^{C×1×1} initialised from a standard normal."""

    def __init__(self, dim: int, heads: int, kernel_size: int | None = None, device=None, dtype=None):
        super().__init__()
        self.mrla = MRLALightAttention(dim, heads, kernel_size, device=device, dtype=dtype)
        self.lambda_t = nn.Parameter(torch.randn(dim, 1, 1, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return self.mrla(x) + self.lambda_t * prev


def mrla_heads(channels: int, dim_per_head: int = 32) -> int:
    """C // dim_per_head heads, at least one (the official rule gives 0 heads below 32 channels)."""
    return max(1, channels // dim_per_head)


class _MRLAStep:
    """The forward shared by the MRLA blocks: block, then `X + DropPath(BN_mrla(MRLA(X, S)))`."""

    def _init_mrla(self, dim: int, dim_per_head: int, norm_layer, drop_path, device, dtype) -> None:
        self.mrla = MRLALight(dim, mrla_heads(dim, dim_per_head), device=device, dtype=dtype)
        self.bn_mrla = norm_layer(dim, device=device, dtype=dtype)  # γ=1, β=0: not zero-initialised
        rate = drop_path.drop_prob if drop_path is not None else 0.0
        self.drop_path_mrla = DropPath(rate) if rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = block_shortcut(self, x)
        out = block_act(self)(residual_branch(self, x) + shortcut)
        return out + self.drop_path_mrla(self.bn_mrla(self.mrla(out, shortcut)))


class MRLABottleneck(_MRLAStep, Bottleneck):
    """timm `Bottleneck` followed by the MRLA-light step."""

    def __init__(self, *args, mrla_dim_per_head: int = 32, norm_layer=nn.BatchNorm2d, **kwargs):
        super().__init__(*args, norm_layer=norm_layer, **kwargs)
        self._init_mrla(
            self.conv3.out_channels,
            mrla_dim_per_head,
            norm_layer,
            self.drop_path,
            kwargs.get("device"),
            kwargs.get("dtype"),
        )


class MRLABasicBlock(_MRLAStep, BasicBlock):
    """timm `BasicBlock` followed by the MRLA-light step (our adaptation)."""

    def __init__(self, *args, mrla_dim_per_head: int = 32, norm_layer=nn.BatchNorm2d, **kwargs):
        super().__init__(*args, norm_layer=norm_layer, **kwargs)
        self._init_mrla(
            self.conv2.out_channels,
            mrla_dim_per_head,
            norm_layer,
            self.drop_path,
            kwargs.get("device"),
            kwargs.get("dtype"),
        )


_MRLA_BLOCKS = {BasicBlock: MRLABasicBlock, Bottleneck: MRLABottleneck}


class MRLAResNet(StagedResNet):
    """timm ResNet with MRLA-light after every block.

    Args:
        block: timm `BasicBlock`/`Bottleneck` (replaced by their MRLA versions) or an MRLA block.
        mrla_dim_per_head: channels per attention head (official 32); heads = max(1, C // this).
        small_image: CIFAR-style stem for 28–32 px images.
        **kwargs: timm `ResNet` arguments (layers, channels, num_classes, in_chans, drop_path_rate, ...).
    """

    def __init__(
        self, *, block: type[nn.Module] = Bottleneck, mrla_dim_per_head: int = 32, small_image: bool = False, **kwargs
    ):
        block = _MRLA_BLOCKS.get(block, block)
        if not issubclass(block, _MRLAStep):
            raise TypeError(f"MRLAResNet needs a BasicBlock or Bottleneck, got {block.__name__}")
        block_args = dict(kwargs.pop("block_args", None) or {}, mrla_dim_per_head=mrla_dim_per_head)
        super().__init__(block=block, block_args=block_args, small_image=small_image, **kwargs)

    def no_weight_decay(self) -> set[str]:
        """None: the official recipe decays every parameter, λ included."""
        return set()



default_cfgs = generate_default_cfgs(
    {
        **{f"mrla_resnet{d}": imagenet_cfg(**MRLA_PAPER) for d in (50, 101, 152)},
        **{f"mrla_cifar_resnet{d}": small_cfg(**MRLA_PAPER) for d in (20, 56, 110)},
    }
)


def _create(variant: str, pretrained: bool = False, **kwargs) -> MRLAResNet:
    return build_resnet(MRLAResNet, variant, pretrained, **kwargs)


def _imagenet(depth: int, pretrained: bool, **kwargs) -> MRLAResNet:
    block, layers = ARCHS[depth]
    return _create(f"mrla_resnet{depth}", pretrained, block=block, layers=layers, **kwargs)


def _small(depth: int, pretrained: bool, **kwargs) -> MRLAResNet:
    return _create(
        f"mrla_cifar_resnet{depth}", pretrained, small_image=True, **small_resnet_kwargs(depth), **kwargs
    )


@register_model
def mrla_resnet50(pretrained: bool = False, **kwargs) -> MRLAResNet:
    return _imagenet(50, pretrained, **kwargs)


@register_model
def mrla_resnet101(pretrained: bool = False, **kwargs) -> MRLAResNet:
    return _imagenet(101, pretrained, **kwargs)


@register_model
def mrla_resnet152(pretrained: bool = False, **kwargs) -> MRLAResNet:
    return _imagenet(152, pretrained, **kwargs)


@register_model
def mrla_cifar_resnet20(pretrained: bool = False, **kwargs) -> MRLAResNet:
    return _small(20, pretrained, **kwargs)


@register_model
def mrla_cifar_resnet56(pretrained: bool = False, **kwargs) -> MRLAResNet:
    return _small(56, pretrained, **kwargs)


@register_model
def mrla_cifar_resnet110(pretrained: bool = False, **kwargs) -> MRLAResNet:
    return _small(110, pretrained, **kwargs)
