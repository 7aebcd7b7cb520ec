"""S6LA on vision transformers: DeiT-Ti/S/B (paper §4.3, Algorithm 2; design note s6la.md §3).

A state `h ∈ (B, D, N)` runs alongside the tokens. After every timm `Block`:

    c   = X[:, 0]                         the class token (mean patch token for cls-less models)
    h   = TokenStateUnit.update(h, c)     h = exp(ΔA) ⊙ h + (Δ ⊙ c̃) ⊗ B
    X_p = TokenStateUnit.read(X_p, h)     X_p + (X_p W_Cᵀ) hᵀ for the patch tokens only

Prefix tokens (class, distillation, registers) pass through the read untouched, so with the class-token head
(`global_pool="token"`, DeiT's) the last block's unit could never change the output: it is not built, and the
last block's tokens go to the norm and head as the block left them. The model is a
subclass of timm's `VisionTransformer` (through `BlockLoopViT`, `_vit_base.py`): patch embedding,
position embedding, blocks, norm and head are timm's, so timm checkpoints, `dynamic_img_size` and
`features_only` work as for a plain ViT.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from ._state_init import S6LA_PAPER, check_h0_mode, learned_h0, start_state
from ._token_state import TOKEN_DT_RANGE, TokenStateUnit, record_state_terms, zero_readouts
from ._vit_base import DEIT_ARCHS, BlockLoopViT, build_vit, deit_cfg

# BlockLoopViT, deit_cfg and build_vit live in _vit_base (the MRLA DeiT shares them); still importable from here
__all__ = ["S6LAVisionTransformer", "BlockLoopViT", "deit_cfg", "build_vit"]

SUMMARIES = ("token", "mean")


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
        **kwargs: timm `VisionTransformer` arguments. `global_pool` sets the units: one per block, less the
            last one under the class-token head ("token", the default), which never reads it. A model built
            with "token" and switched to another pooling by `reset_classifier` keeps its units.
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
        check_h0_mode(h0)
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
        # Eq. 19 passes the class token through, and a class-token head reads nothing else: a unit after the
        # last block could never change the output nor get a gradient, so it is built only for heads that read
        # the patch tokens (global_pool "avg", "map", ...), as the S6LA ResNets build no update after their last
        # block. The paper's counts include it (README, "No unit after DeiT's last block").
        n_units = len(self.blocks) - 1 if self.global_pool == "token" else len(self.blocks)
        self.s6la = nn.ModuleList(
            TokenStateUnit(
                dim, d_state, fuse=fuse, selective=selective, zero_init_readout=zero_init_readout,
                dt_rank=dt_rank, dt_min=dt_min, dt_max=dt_max, dt_floor=dt_floor, c_norm=c_norm,
            )
            for _ in range(max(n_units, 0))
        )
        self.h0 = learned_h0((dim, d_state)) if h0 == "learned" else None

    def init_weights(self, mode: str = "", needs_reset: bool = True) -> None:
        """timm's ViT init, then the S6LA init again (timm's generic Linear init would overwrite it)."""
        super().init_weights(mode, needs_reset)
        if "s6la" not in self._modules:  # called from VisionTransformer.__init__, before the units exist
            return
        with torch.no_grad():
            for unit in self.s6la:
                unit.reinit(self.zero_init_readout)
            if self.h0 is not None:
                nn.init.kaiming_normal_(self.h0)

    # -- the recurrence ------------------------------------------------------------------------

    def initial_carry(self, x: torch.Tensor) -> torch.Tensor:
        draw = self.h0_mode == "random" and self.training
        return start_state(self.h0, x, (x.shape[0], self.embed_dim, self.d_state), self.d_state, draw)

    def block_step(self, i, block, x, h, grid, **kw):
        x = self._call_block(block, x, **kw)
        if i >= len(self.s6la):  # the last block under a class-token head has no unit (see __init__)
            return x, h
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


default_cfgs = generate_default_cfgs({f"s6la_deit_{s}_patch16_224": deit_cfg(**S6LA_PAPER) for s in DEIT_ARCHS})


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
