"""S6LA on vision transformers: DeiT-Ti/S/B (paper §4.3, Algorithm 2; design note s6la.md §3).

A state `h ∈ (B, D, N)` runs alongside the tokens. After every timm `Block`:

    c   = X[:, 0]                         the class token (mean patch token for cls-less models)
    h   = TokenStateUnit.update(h, c)     h = exp(ΔA) ⊙ h + (Δ ⊙ c̃) ⊗ B
    X_p = TokenStateUnit.read(X_p, h)     X_p + (X_p W_Cᵀ) hᵀ for the patch tokens only

Prefix tokens (class, distillation, registers) pass through the read untouched. The model is a
subclass of timm's `VisionTransformer`: patch embedding, position embedding, blocks, norm and head
are timm's, so timm checkpoints, `dynamic_img_size` and `features_only` work as for a plain ViT.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from ..checkpoint import load_into_larger_model
from ..layers.selective import state_float
from ._resnet_base import check_image_input
from ._token_state import TOKEN_DT_RANGE, TokenStateUnit, record_state_terms, zero_readouts

__all__ = ["S6LAVisionTransformer", "BlockLoopViT", "deit_cfg", "build_vit"]

H0_MODES = ("learned", "random", "zeros")
SUMMARIES = ("token", "mean")

DEIT_ARCHS = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
}


def deit_cfg(**kwargs) -> dict:
    """timm pretrained-cfg of an ImageNet DeiT (no weights are published: `url` is empty)."""
    cfg = dict(
        url="", num_classes=1000, input_size=(3, 224, 224), pool_size=None, crop_pct=0.875,
        interpolation="bicubic", fixed_input_size=True, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv="patch_embed.proj", classifier="head",
    )
    return {**cfg, **kwargs}


def build_vit(cls: type, variant: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """`build_model_with_cfg` as timm's `_create_vision_transformer` calls it (features via the getter)."""
    out_indices = kwargs.pop("out_indices", 3)
    return build_model_with_cfg(
        cls, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


class BlockLoopViT(VisionTransformer):
    """timm `VisionTransformer` whose blocks run in a Python loop that threads a carry.

    Subclasses define `initial_carry(x)` and `block_step(i, block, x, carry, grid, **block_kwargs)`
    → `(x, carry)`; `forward_features`, `forward_intermediates` and the pruning all go through it.
    """

    def initial_carry(self, x: torch.Tensor) -> Any:
        return None

    def block_step(self, i: int, block: nn.Module, x: torch.Tensor, carry: Any, grid: tuple[int, int], **kw):
        return self._call_block(block, x, **kw), carry

    def _call_block(self, block: nn.Module, x: torch.Tensor, **kw) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(partial(block, **kw), x)
        return block(x, **kw)

    def check_input(self, x: Any) -> None:
        name = type(self).__name__
        patch = self.patch_embed.patch_size
        check_image_input(x, self.patch_embed.proj.in_channels, max(patch), name)
        strict = getattr(self.patch_embed, "strict_img_size", False) and not self.dynamic_img_size
        if strict and tuple(x.shape[-2:]) != tuple(self.patch_embed.img_size):
            h, w = self.patch_embed.img_size
            raise ValueError(
                f"{name} was built for {h}x{w} px images but got {x.shape[-2]}x{x.shape[-1]}; "
                f"create it with img_size={tuple(x.shape[-2:])} or dynamic_img_size=True"
            )

    def embed_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        self.check_input(x)
        grid = self.patch_embed.dynamic_feat_size(tuple(x.shape[-2:]))
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        x = self.norm_pre(x)
        return x, grid

    def run_blocks(
        self,
        x: torch.Tensor,
        take_indices: list[int] | None = None,
        stop_at: int | None = None,
        norm: bool = False,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, Any, list[torch.Tensor]]:
        """The token loop from the image: final tokens (before `norm`), final carry, intermediates."""
        x, grid = self.embed_tokens(x)
        carry = self.initial_carry(x)
        kw = dict(attn_mask=attn_mask, is_causal=is_causal) if attn_mask is not None or is_causal else {}
        out = []
        for i, block in enumerate(self.blocks):
            if stop_at is not None and i > stop_at:
                break
            x, carry = self.block_step(i, block, x, carry, grid, **kw)
            if take_indices is not None and i in take_indices:
                out.append(self.norm(x) if norm else x)
        return x, carry, out

    def forward_features(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        x, _, _ = self.run_blocks(x, attn_mask=attn_mask, is_causal=is_causal)
        return self.norm(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        output_dict: bool = False,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ):
        """timm's feature API (same arguments and outputs as `VisionTransformer.forward_intermediates`)."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.check_input(x)
        b = x.shape[0]
        hh, ww = self.patch_embed.dynamic_feat_size(tuple(x.shape[-2:]))
        x, _, inter = self.run_blocks(
            x, take_indices, max_index if stop_early else None, norm, attn_mask=attn_mask, is_causal=is_causal
        )
        npt = self.num_prefix_tokens
        prefix = [y[:, :npt] for y in inter] if npt else None
        inter = [y[:, npt:] for y in inter]
        if output_fmt == "NCHW":
            inter = [y.reshape(b, hh, ww, -1).permute(0, 3, 1, 2).contiguous() for y in inter]
        if output_dict:
            result = {"image_intermediates": inter}
            if prefix is not None and return_prefix_tokens:
                result["image_intermediates_prefix"] = prefix
            if not intermediates_only:
                result["image_features"] = self.norm(x)
            return result
        if return_prefix_tokens and prefix is not None:
            inter = list(zip(inter, prefix))
        if intermediates_only:
            return inter
        return self.norm(x), inter

    def load_vanilla_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True) -> list[str]:
        """Load a vanilla timm ViT/DeiT checkpoint of the same size; the new modules keep their init.

        Every key of `state_dict` must exist in the model with the same shape (with `strict`;
        otherwise unknown keys are skipped). Returns the model's keys the checkpoint lacked.
        """
        return load_into_larger_model(self, state_dict, strict)


class S6LAVisionTransformer(BlockLoopViT):
    """timm `VisionTransformer` with S6LA layer aggregation (one `TokenStateUnit` per block).

    Args:
        d_state: N, the state size (paper default 32).
        fuse: "mul" (paper Eq. 18: each patch token reads `h` with its own C = W_C t) or "concat"
            (Table 6 ablation: one state summary added to every patch token).
        selective: False makes Δ and B learned per-block constants (ablation "w/o selective").
        h0: "learned" (one global `(D, N)` parameter, Kaiming-normal init, std √(2/N)), "random"
            (re-drawn from that distribution every training forward, zeros in eval: "w/o trainable h")
            or "zeros".
        zero_init_readout: start the read-out (W_C, or W_cat) at zero, so the model is the plain ViT at init.
        summary: the token that drives the update: "token" (token 0, the class token) or "mean"
            (mean of the patch tokens). Default: "token" if the model has a class token and
            `global_pool != 'avg'`, else "mean".
        dt_rank: rank of the Δ projection (default ceil(D/8)).
        c_norm: "rms" or "none", normalisation of the summary token in the input term.
        dt_min, dt_max, dt_floor: initial range of the step sizes Δ.
        **kwargs: timm `VisionTransformer` arguments.
    """

    def __init__(
        self,
        *,
        d_state: int = 32,
        fuse: str = "mul",
        selective: bool = True,
        h0: str = "learned",
        zero_init_readout: bool = False,
        summary: str | None = None,
        dt_rank: int | None = None,
        c_norm: str = "rms",
        dt_min: float = TOKEN_DT_RANGE[0],
        dt_max: float = TOKEN_DT_RANGE[1],
        dt_floor: float = TOKEN_DT_RANGE[2],
        **kwargs,
    ):
        if h0 not in H0_MODES:
            raise ValueError(f"h0 must be one of {H0_MODES}, got {h0!r}")
        if d_state < 1:
            raise ValueError(f"d_state must be positive, got {d_state}")
        if summary is not None and summary not in SUMMARIES:
            raise ValueError(f"summary must be one of {SUMMARIES}, got {summary!r}")
        super().__init__(**kwargs)
        if summary is None:
            summary = "token" if self.has_class_token and self.global_pool != "avg" else "mean"
        if summary == "token" and not self.has_class_token:
            raise ValueError("summary='token' needs a class token (class_token=True)")
        dim = self.embed_dim
        self.d_state, self.fuse, self.summary, self.h0_mode = d_state, fuse, summary, h0
        self.zero_init_readout = zero_init_readout
        self.s6la = nn.ModuleList(
            TokenStateUnit(
                dim, d_state, fuse=fuse, selective=selective, zero_init_readout=zero_init_readout,
                dt_rank=dt_rank, dt_min=dt_min, dt_max=dt_max, dt_floor=dt_floor, c_norm=c_norm,
            )
            for _ in self.blocks
        )
        if h0 == "learned":
            self.h0 = nn.Parameter(torch.empty(dim, d_state))
            nn.init.kaiming_normal_(self.h0)  # fan_in = N: std √(2/N)
        else:
            self.h0 = None
        if self.global_pool == "token" and self.s6la:
            # Eq. 19 passes the class token through, and a class-token head reads nothing else: the
            # last unit can never get a gradient. It is kept (the paper's counts include it) but
            # frozen, so that optimizers and DDP do not wait for gradients that never come.
            self.s6la[-1].requires_grad_(False)

    def init_weights(self, mode: str = "", needs_reset: bool = True) -> None:
        """timm's ViT init, then the S6LA init again (timm's generic Linear init would overwrite it)."""
        super().init_weights(mode, needs_reset)
        if "s6la" not in self._modules:  # called from VisionTransformer.__init__, before the units exist
            return
        with torch.no_grad():
            for unit in self.s6la:
                unit.ssm.reset_parameters()
                if unit.ssm.selective:
                    trunc_normal_(unit.ssm.wB.weight, std=0.02)
                lin = unit.wC if unit.fuse == "mul" else unit.wcat
                if self.zero_init_readout:
                    nn.init.zeros_(lin.weight)
                else:
                    trunc_normal_(lin.weight, std=0.02)
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)
            if self.h0 is not None:
                nn.init.kaiming_normal_(self.h0)

    # -- the recurrence ------------------------------------------------------------------------

    def initial_carry(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.h0 is not None:
            return state_float(self.h0).expand(b, -1, -1)
        h = state_float(x.new_zeros(b, self.embed_dim, self.d_state))
        if self.h0_mode == "random" and self.training:
            h.normal_(0.0, math.sqrt(2.0 / self.d_state))  # the learned h0's init distribution
        return h

    def block_step(self, i, block, x, h, grid, **kw):
        x = self._call_block(block, x, **kw)
        npt = self.num_prefix_tokens
        c = x[:, 0] if self.summary == "token" else x[:, npt:].mean(dim=1)
        return self.s6la[i].step(x, h, c, npt)

    def forward_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final features (after `norm`) and the final state `(B, D, N)`."""
        x, h, _ = self.run_blocks(x)
        return self.norm(x), h

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        take_indices = super().prune_intermediate_layers(indices, prune_norm, prune_head)
        self.s6la = self.s6la[: len(self.blocks)]
        return take_indices

    # -- training helpers ----------------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        names = set(super().no_weight_decay()) | {"h0"}
        for i, unit in enumerate(self.s6la):
            names |= {f"s6la.{i}.{n}" for n in unit.no_weight_decay()}
        return names

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        groups = super().group_matcher(coarse)
        groups["stem"] = groups["stem"] + r"|^h0"
        groups["blocks"] = [(r"^blocks\.(\d+)", None), (r"^s6la\.(\d+)", None), (r"^norm", (99999,))]
        return groups

    def readouts(self) -> list[nn.Linear]:
        return [unit.wC if unit.fuse == "mul" else unit.wcat for unit in self.s6la]

    def load_vanilla_state_dict(
        self, state_dict: dict[str, torch.Tensor], strict: bool = True, zero_readout: bool = True
    ) -> list[str]:
        """Warm start from a vanilla timm DeiT/ViT state_dict of the same size.

        Loads every vanilla tensor; the S6LA parameters keep their init except the read-out
        (W_C, or W_cat and its bias), which is zeroed when `zero_readout` (the default), so the
        model's output equals the vanilla model's until the read-out learns. Returns the
        S6LA keys that the checkpoint did not provide.
        """
        missing = super().load_vanilla_state_dict(state_dict, strict=strict)
        if zero_readout:
            zero_readouts(self.s6la)
        return missing

    @torch.no_grad()
    def state_diagnostics(self, x: torch.Tensor) -> list[dict]:
        """Per block: RMS of the decay term exp(ΔA)·h and of the input term Δ·c̃·B, their ratio,
        and the mean Δ, on the batch `x` (in the model's current train/eval mode)."""
        return record_state_terms([(f"blocks.{i}", u) for i, u in enumerate(self.s6la)], lambda: self.run_blocks(x))


default_cfgs = generate_default_cfgs({f"s6la_deit_{s}_patch16_224": deit_cfg() for s in DEIT_ARCHS})


def _create(size: str, pretrained: bool, **kwargs) -> S6LAVisionTransformer:
    args = dict(patch_size=16, **DEIT_ARCHS[size])
    return build_vit(S6LAVisionTransformer, f"s6la_deit_{size}_patch16_224", pretrained, **{**args, **kwargs})


@register_model
def s6la_deit_tiny_patch16_224(pretrained: bool = False, **kwargs) -> S6LAVisionTransformer:
    return _create("tiny", pretrained, **kwargs)


@register_model
def s6la_deit_small_patch16_224(pretrained: bool = False, **kwargs) -> S6LAVisionTransformer:
    return _create("small", pretrained, **kwargs)


@register_model
def s6la_deit_base_patch16_224(pretrained: bool = False, **kwargs) -> S6LAVisionTransformer:
    return _create("base", pretrained, **kwargs)
