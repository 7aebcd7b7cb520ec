"""S6LA on hierarchical vision transformers: Swin-T/S/B (design note s6la.md §4).

A state `h ∈ (B, D_s, N)` runs alongside the tokens of stage s. After every timm block:

    T   = tokens of the block output         (B, L_s, D_s)   Swin: NHWC reshaped to tokens
    c   = mean_L T                            the "summary token" (these models have no class token)
    h   = TokenStateUnit.update(h, c)         h = exp(ΔA) ⊙ h + (Δ ⊙ c̃) ⊗ B
    T   = TokenStateUnit.read(T, h)           T + (T W_Cᵀ) hᵀ, for all tokens

At a stage change the state follows the width: `h ← P_s h` along the channel axis, with
`P_s: Linear(D_s, D_{s+1}, bias=False)` initialised to the identity (`transition="linear"`), or it
restarts from a learned per-stage `h0_s` (`transition="reset"`). The update sees the un-padded
block output (after Swin's window merge and reverse shift).

`HierarchicalS6LA` (`_hier_base.py`) holds what Swin and PVTv2 (`s6la_pvt.py`) share: the units, h0,
the transitions, weight-decay names, diagnostics and the warm start. The models subclass timm's own
classes, so timm checkpoints and heads work unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
import torch.nn as nn
from timm.models import checkpoint, generate_default_cfgs, register_model
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer import checkpoint_filter_fn as swin_filter_fn

from ._features import feature_indices
from ._hier_base import HierarchicalS6LA, build_hier, hier_cfg
from ._inputs import check_image_input

# HierarchicalS6LA and build_hier live in _hier_base (PVTv2 shares them); still importable from here
__all__ = ["HierarchicalS6LA", "S6LASwinTransformer", "build_hier"]

# one call in a torch.fx graph, run on the real image when the graph runs (see `_inputs.py`)
torch.fx.wrap("check_image_input")


class S6LASwinTransformer(HierarchicalS6LA, SwinTransformer):
    """timm `SwinTransformer` with S6LA layer aggregation (one `TokenStateUnit` per block).

    Args:
        d_state: N, the state size (paper default 32).
        fuse: "mul" (each token reads `h` with its own C = W_C t) or "concat" (one state summary
            added to every token).
        selective: False makes Δ and B learned per-block constants (ablation "w/o selective").
        h0: "learned" (a global `(D_1, N)` parameter, Kaiming-normal init, std √(2/N)), "random"
            (re-drawn from that distribution every training forward, zeros in eval) or "zeros".
        transition: "linear" (`h ← P_s h`, P_s identity init) or "reset" (a per-stage h0, following `h0`).
        zero_init_readout: start the read-outs at zero, so the model is the plain Swin at init.
        dt_rank: rank of the Δ projection (default ceil(D_s/8)).
        c_norm: "rms" or "none", normalisation of the summary token in the input term.
        dt_min, dt_max, dt_floor: initial range of the step sizes Δ.
        **kwargs: timm `SwinTransformer` arguments.

    `torch.export.export` works (tested against eager): the S6LA loop is plain tensor code. The
    exported program is specialised to the traced image size, also with `dynamic_img_size=True`
    (a guard rejects other sizes); exporting with symbolic image sizes was not attempted.
    """

    stage_attr = "layers"


    @torch.jit.ignore
    def init_weights(self, mode: str = "", needs_reset: bool = True) -> None:
        """timm's Swin init, then the S6LA init again (timm's generic Linear init would overwrite it)."""
        super().init_weights(mode, needs_reset)
        if "s6la" in self._modules:  # not when called from SwinTransformer.__init__, before the units exist
            self.reset_s6la()

    def check_input(self, x: Any) -> None:
        pe = self.patch_embed
        check_image_input(
            x, self.in_chans, max(pe.patch_size), type(self).__name__,
            img_size=tuple(pe.img_size) if pe.strict_img_size else None,
            size_multiple=None if pe.dynamic_img_pad else tuple(pe.patch_size),
        )

    def _block_step(self, s: int, j: int, block: nn.Module, x: torch.Tensor, h: torch.Tensor):
        x = block(x)
        b, hh, ww, c = x.shape
        t, h = self.state_tokens(s, j, x.reshape(b, hh * ww, c), h)
        return t.reshape(b, hh, ww, c), h

    def run_stages(self, x: torch.Tensor, take: list[int] | None = None, stop: int | None = None, norm=False):
        """Patch embed and stages: final NHWC features (before `norm`), final state, NCHW intermediates."""
        self.check_input(x)
        x = self.patch_embed(x)
        h = self.initial_state(x)
        out = []
        last = len(self.layers) - 1
        for s, stage in enumerate(self.layers):
            if stop is not None and s > stop:
                break
            if s > 0:
                h = self.transition_state(h, s, x)
            x = stage.downsample(x)
            for j, block in enumerate(stage.blocks):
                if stage.grad_checkpointing and self.training and not torch.jit.is_scripting():
                    x, h = checkpoint(self._block_step, s, j, block, x, h)
                else:
                    x, h = self._block_step(s, j, block, x, h)
            if take is not None and s in take:
                y = self.norm(x) if norm and s == last else x
                out.append(y.permute(0, 3, 1, 2).contiguous())
        return x, h, out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, _, _ = self.run_stages(x)
        return self.norm(x)

    def forward_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final features (after `norm`, NHWC) and the final state `(B, D_last, N)`."""
        x, h, _ = self.run_stages(x)
        return self.norm(x), h

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """timm's feature API: NCHW (or NHWC, Swin's own layout) stage outputs, as timm's Swin gives them."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take, max_index = feature_indices(len(self.layers), indices)
        x, _, inter = self.run_stages(x, take, max_index if stop_early else None, norm)
        if output_fmt == "NHWC":
            inter = [t.permute(0, 2, 3, 1) for t in inter]
        if intermediates_only:
            return inter
        if not stop_early or max_index == len(self.layers) - 1:
            x = self.norm(x)
        return x, inter

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        take = super().prune_intermediate_layers(indices, prune_norm, prune_head)
        self.prune_s6la(len(self.layers))
        return take

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set(super().no_weight_decay()) | self.s6la_no_weight_decay()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        groups = super().group_matcher(coarse)
        groups["stem"] = groups["stem"] + r"|^h0"
        if coarse:
            groups["blocks"] = [(r"^layers\.(\d+)", None), (r"^s6la\.(\d+)", None), (r"^s6la_(?:proj|h0)\.(\d+)", None)]
        else:
            groups["blocks"] = groups["blocks"][:-1] + [
                (r"^s6la\.(\d+)\.(\d+)", None), (r"^s6la_(?:proj|h0)\.(\d+)", None), groups["blocks"][-1],
            ]
        return groups


SWIN_ARCHS = {
    "tiny": dict(patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "small": dict(patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "base": dict(patch_size=4, window_size=7, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}


# forward_features returns NHWC maps (`output_fmt`), 7x7 at 224 px
default_cfgs = generate_default_cfgs(
    {f"s6la_swin_{s}_patch4_window7_224": hier_cfg(classifier="head.fc", fixed_input_size=True) for s in SWIN_ARCHS}
)


def _create(size: str, pretrained: bool, **kwargs) -> S6LASwinTransformer:
    args = {**SWIN_ARCHS[size], **kwargs}
    n_stages = len(args["depths"])
    return build_hier(
        S6LASwinTransformer, f"s6la_swin_{size}_patch4_window7_224", pretrained, swin_filter_fn, n_stages, **args
    )


@register_model
def s6la_swin_tiny_patch4_window7_224(pretrained: bool = False, **kwargs) -> S6LASwinTransformer:
    return _create("tiny", pretrained, **kwargs)


@register_model
def s6la_swin_small_patch4_window7_224(pretrained: bool = False, **kwargs) -> S6LASwinTransformer:
    return _create("small", pretrained, **kwargs)


@register_model
def s6la_swin_base_patch4_window7_224(pretrained: bool = False, **kwargs) -> S6LASwinTransformer:
    return _create("base", pretrained, **kwargs)
