"""S6LA on PVTv2-B0/B1/B2 (design note s6la.md §4).

The same recurrence as `s6la_swin.py` (see there and `HierarchicalS6LA`, `_hier_base.py`): one `TokenStateUnit` of
width D_s per block of stage s, summary token = mean over the block's output tokens, the read
updates all tokens, `h ← P_s h` (or a per-stage h0) at each stage change. timm's PVTv2 blocks take
`(tokens (B, L, C), feat_size)`; after the last block of a stage come `stage.norm` and the reshape
to NCHW, as in timm.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
import torch.nn as nn
from timm.models import checkpoint, generate_default_cfgs, register_model
from timm.models.pvt_v2 import PyramidVisionTransformerV2
from timm.models.pvt_v2 import checkpoint_filter_fn as pvt_filter_fn

from ._features import feature_indices
from ._hier_base import HierarchicalS6LA, build_hier, hier_cfg
from ._inputs import check_image_input

__all__ = ["S6LAPyramidVisionTransformerV2", "check_stage_sizes"]


def _conv_geometry(conv: nn.Conv2d) -> tuple[int, int, int]:
    return conv.kernel_size[0], conv.stride[0], conv.padding[0]


def check_stage_sizes(x: Any, name: str, stages: tuple) -> None:
    """Every stage's feature map at least as large as its attention's spatial-reduction conv, which timm would
    otherwise fail on deep inside. `stages`: per stage, the (kernel, stride, padding) of the convs before it
    and the reduction's kernel; plain values, so that a torch.fx graph can record this call (see `_inputs.py`)."""
    if torch.jit.is_scripting():  # a scripted FX graph: typed inputs, and TorchScript could not compile the rest
        return
    hh, ww = int(x.shape[-2]), int(x.shape[-1])
    for s, (convs, k) in enumerate(stages):
        for kernel, stride, pad in convs:
            hh, ww = (hh + 2 * pad - kernel) // stride + 1, (ww + 2 * pad - kernel) // stride + 1
        if min(hh, ww) < k:
            raise ValueError(
                f"{name}: a {x.shape[-2]}x{x.shape[-1]} px image gives a {hh}x{ww} feature map in stage {s}, "
                f"smaller than its attention's spatial reduction {k}x{k}; use larger images"
            )


# one call each in a torch.fx graph, run on the real image when the graph runs (see `_inputs.py`)
torch.fx.wrap("check_image_input")
torch.fx.wrap("check_stage_sizes")


class S6LAPyramidVisionTransformerV2(HierarchicalS6LA, PyramidVisionTransformerV2):
    """timm `PyramidVisionTransformerV2` with S6LA layer aggregation (one `TokenStateUnit` per block).

    Args: as `S6LASwinTransformer` (d_state, fuse, selective, h0, transition, zero_init_readout,
    dt_rank, c_norm, dt_min, dt_max, dt_floor); **kwargs are timm `PyramidVisionTransformerV2` arguments.
    """

    stage_attr = "stages"


    def check_input(self, x: Any) -> None:
        """Image checks, and that every stage is at least as large as its attention's
        spatial-reduction conv (sr_ratio), which timm would otherwise fail on deep inside."""
        name = type(self).__name__
        check_image_input(x, self.in_chans, 1, name)
        stages = []
        for s, stage in enumerate(self.stages):
            convs = [_conv_geometry(self.patch_embed.proj)] if s == 0 else []
            if stage.downsample is not None:
                convs.append(_conv_geometry(stage.downsample.proj))
            sr = getattr(stage.blocks[0].attn, "sr", None) if len(stage.blocks) else None
            stages.append((tuple(convs), sr.kernel_size[0] if isinstance(sr, nn.Conv2d) else 1))
        check_stage_sizes(x, name, tuple(stages))

    def _block_step(self, s: int, j: int, block: nn.Module, x: torch.Tensor, h: torch.Tensor, feat_size):
        return self.state_tokens(s, j, block(x, feat_size), h)

    def run_stages(self, x: torch.Tensor, take: list[int] | None = None, stop: int | None = None):
        """Patch embed and stages: final NCHW features, final state, NCHW stage outputs."""
        self.check_input(x)
        x = self.patch_embed(x)  # NHWC
        h = self.initial_state(x)
        out = []
        for s, stage in enumerate(self.stages):
            if stop is not None and s > stop:
                break
            if s > 0:
                h = self.transition_state(h, s, x)
            if stage.downsample is not None:
                x = stage.downsample(x)  # NCHW -> NHWC
            b, hh, ww, c = x.shape
            feat_size = (hh, ww)
            x = x.reshape(b, -1, c)
            for j, block in enumerate(stage.blocks):
                if stage.grad_checkpointing and self.training and not torch.jit.is_scripting():
                    x, h = checkpoint(self._block_step, s, j, block, x, h, feat_size)
                else:
                    x, h = self._block_step(s, j, block, x, h, feat_size)
            x = stage.norm(x)
            x = x.reshape(b, hh, ww, -1).permute(0, 3, 1, 2).contiguous()
            if take is not None and s in take:
                out.append(x)
        return x, h, out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, _, _ = self.run_stages(x)
        return x

    def forward_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final NCHW features and the final state `(B, D_last, N)`."""
        x, h, _ = self.run_stages(x)
        return x, h

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """timm's feature API: NCHW stage outputs (same arguments and outputs as timm's PVTv2)."""
        if output_fmt != "NCHW":
            raise ValueError(f"only NCHW intermediates are supported, got {output_fmt!r}")
        take, max_index = feature_indices(len(self.stages), indices)
        x, _, inter = self.run_stages(x, take, max_index if stop_early else None)
        if intermediates_only:
            return inter
        return x, inter

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        take = super().prune_intermediate_layers(indices, prune_norm, prune_head)
        self.prune_s6la(len(self.stages))
        return take

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set(super().no_weight_decay()) | self.s6la_no_weight_decay()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^patch_embed|^h0",
            blocks=[(r"^stages\.(\d+)", None), (r"^s6la\.(\d+)", None), (r"^s6la_(?:proj|h0)\.(\d+)", None)],
        )


PVT_ARCHS = {
    "b0": dict(depths=(2, 2, 2, 2), embed_dims=(32, 64, 160, 256), num_heads=(1, 2, 5, 8)),
    "b1": dict(depths=(2, 2, 2, 2), embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8)),
    "b2": dict(depths=(3, 4, 6, 3), embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8)),
}


default_cfgs = generate_default_cfgs(
    {f"s6la_pvt_v2_{s}": hier_cfg(classifier="head", fixed_input_size=False) for s in PVT_ARCHS}
)


def _create(size: str, pretrained: bool, **kwargs) -> S6LAPyramidVisionTransformerV2:
    args = {**PVT_ARCHS[size], **kwargs}
    return build_hier(
        S6LAPyramidVisionTransformerV2, f"s6la_pvt_v2_{size}", pretrained, pvt_filter_fn, len(args["depths"]), **args
    )


@register_model
def s6la_pvt_v2_b0(pretrained: bool = False, **kwargs) -> S6LAPyramidVisionTransformerV2:
    return _create("b0", pretrained, **kwargs)


@register_model
def s6la_pvt_v2_b1(pretrained: bool = False, **kwargs) -> S6LAPyramidVisionTransformerV2:
    return _create("b1", pretrained, **kwargs)


@register_model
def s6la_pvt_v2_b2(pretrained: bool = False, **kwargs) -> S6LAPyramidVisionTransformerV2:
    return _create("b2", pretrained, **kwargs)
