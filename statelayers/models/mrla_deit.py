"""MRLA-light on DeiT, the layer-attention baseline (Fang et al. 2023; design note s6la.md §5.2).

As the official code (joyfang1106/MRLA, `deit/deit_mrla_light.py`) builds it: after each standard
block, with `o = x` the block's input,

    x = x + M(LN_x(x), LN_o(o))

where M treats the patch tokens as a `(D, H, W)` map: Q and K are ECA-style 1-D convs (kernel k
from D) over the pooled D-vector, V = GELU(depthwise 3×3 conv(map)), heads of 16 channels each get
a sigmoid gate `σ(Q_h·K_h / 4)`, and the patch output is `V ⊙ gate + λ ⊙ LN_o(o)` (λ ∈ R^D, randn).
The prefix (class) token slot carries `LN_x(x)`, so the class token gets `+ LN_x(x)_cls`, a quirk
of the official code kept here. The layer attention has no drop-path, as in the official code.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from timm.layers import LayerNorm
from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import Block

from ._mrla_base import MRLA_PAPER, eca_kernel_size
from ._vit_base import DEIT_ARCHS, BlockLoopViT, build_vit, deit_cfg

__all__ = ["MRLAVisionTransformer", "MRLALightTokens", "MRLALightBlock"]


class MRLALightTokens(nn.Module):
    """The light multi-head recurrent layer attention of one block, on tokens."""

    def __init__(self, dim: int, dim_per_head: int = 16, norm_layer: type[nn.Module] = LayerNorm):
        super().__init__()
        if dim % dim_per_head:
            raise ValueError(f"dim={dim} is not a multiple of dim_per_head={dim_per_head}")
        self.heads = dim // dim_per_head
        self.scale = dim_per_head**-0.5
        k = eca_kernel_size(dim)
        self.wq = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.wk = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.wv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.act_v = nn.GELU()
        self.lambda_t = nn.Parameter(torch.randn(dim))
        self.norm_x = norm_layer(dim)
        self.norm_o = norm_layer(dim)

    def forward(self, x: torch.Tensor, o_prev: torch.Tensor, grid: tuple[int, int], num_prefix: int) -> torch.Tensor:
        x = self.norm_x(x)
        o = self.norm_o(o_prev)
        b, _, d = x.shape
        hh, ww = grid
        fmap = x[:, num_prefix:].transpose(1, 2).reshape(b, d, hh, ww)
        y = fmap.mean(dim=(2, 3))[:, None, :]  # (B, 1, D)
        q = self.wq(y).view(b, self.heads, -1)
        k = self.wk(y).view(b, self.heads, -1)
        gate = torch.sigmoid((q * k).sum(dim=-1) * self.scale)  # (B, heads)
        v = self.act_v(self.wv(fmap)).view(b, self.heads, d // self.heads, hh * ww)
        tokens = (v * gate[:, :, None, None]).reshape(b, d, hh * ww).transpose(1, 2)
        tokens = tokens + self.lambda_t * o[:, num_prefix:]
        return torch.cat([x[:, :num_prefix], tokens], dim=1) if num_prefix else tokens


class MRLALightBlock(Block):
    """timm `Block` followed by MRLA-light: `x = Block(x); x = x + M(x, block input)`."""

    def __init__(self, dim: int, num_heads: int, dim_per_head: int = 16, norm_layer=LayerNorm, **kwargs):
        super().__init__(dim, num_heads, norm_layer=norm_layer, **kwargs)
        self.mrla = MRLALightTokens(dim, dim_per_head, norm_layer)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        grid: tuple[int, int] | None = None,
        num_prefix_tokens: int = 1,
    ) -> torch.Tensor:
        o_prev = x
        x = super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        if grid is None:  # square token map
            side = math.isqrt(x.shape[1] - num_prefix_tokens)
            grid = (side, side)
        return x + self.mrla(x, o_prev, grid, num_prefix_tokens)


class MRLAVisionTransformer(BlockLoopViT):
    """timm `VisionTransformer` whose blocks are `MRLALightBlock`s.

    Args:
        dim_per_head: channels per layer-attention head (official: 16).
        **kwargs: timm `VisionTransformer` arguments.
    """

    def __init__(self, *, dim_per_head: int = 16, **kwargs):
        if "block_fn" in kwargs:
            raise ValueError("MRLAVisionTransformer builds its own blocks; block_fn is not accepted")

        def block_fn(**kw):
            return MRLALightBlock(dim_per_head=dim_per_head, **kw)

        super().__init__(block_fn=block_fn, **kwargs)
        self.dim_per_head = dim_per_head

    def block_step(self, i, block, x, carry, grid, **kw):
        return self._call_block(block, x, grid=tuple(grid), num_prefix_tokens=self.num_prefix_tokens, **kw), carry


default_cfgs = generate_default_cfgs({f"mrla_deit_{s}_patch16_224": deit_cfg(**MRLA_PAPER) for s in DEIT_ARCHS})


def _create(size: str, pretrained: bool, **kwargs) -> MRLAVisionTransformer:
    args = dict(patch_size=16, **DEIT_ARCHS[size])
    return build_vit(MRLAVisionTransformer, f"mrla_deit_{size}_patch16_224", pretrained, **{**args, **kwargs})


@register_model
def mrla_deit_tiny_patch16_224(pretrained: bool = False, **kwargs) -> MRLAVisionTransformer:
    return _create("tiny", pretrained, **kwargs)


@register_model
def mrla_deit_small_patch16_224(pretrained: bool = False, **kwargs) -> MRLAVisionTransformer:
    return _create("small", pretrained, **kwargs)


@register_model
def mrla_deit_base_patch16_224(pretrained: bool = False, **kwargs) -> MRLAVisionTransformer:
    return _create("base", pretrained, **kwargs)
