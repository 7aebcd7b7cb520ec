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

`HierarchicalS6LA` holds what Swin and PVTv2 (`s6la_pvt.py`) share: the units, h0, the transitions,
weight-decay names, diagnostics and the warm start. The models subclass timm's own classes, so
timm checkpoints and heads work unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer import _cfg as swin_cfg
from timm.models.swin_transformer import checkpoint_filter_fn as swin_filter_fn

from ..checkpoint import load_into_larger_model
from ..layers.selective import state_float
from ._resnet_base import check_image_input
from ._token_state import TOKEN_DT_RANGE, TokenStateUnit, record_state_terms, zero_readouts

__all__ = ["HierarchicalS6LA", "S6LASwinTransformer", "build_hier"]

H0_MODES = ("learned", "random", "zeros")
TRANSITIONS = ("linear", "reset")


class HierarchicalS6LA:
    """Mixin: S6LA state on a model with stages of widths `dims` and `depths` blocks. Subclasses
    set `stage_attr` (the timm attribute holding the stages) and come before the timm class.

    Modules (names used in checkpoints and `no_weight_decay`):
        s6la.{s}.{j}: the `TokenStateUnit` of block j of stage s.
        h0: the global learned initial state (D_1, N) (`h0="learned"`).
        s6la_proj.{s}: `Linear(D_s, D_{s+1}, bias=False)`, identity init (`transition="linear"`).
        s6la_h0.{s-1}: learned initial state (D_s, N) of stage s ≥ 1 (`transition="reset"`, `h0="learned"`).
    """

    def __init__(
        self,
        *,
        d_state: int = 32,
        fuse: str = "mul",
        selective: bool = True,
        h0: str = "learned",
        transition: str = "linear",
        zero_init_readout: bool = False,
        dt_rank: int | None = None,
        c_norm: str = "rms",
        dt_min: float = TOKEN_DT_RANGE[0],
        dt_max: float = TOKEN_DT_RANGE[1],
        dt_floor: float = TOKEN_DT_RANGE[2],
        **kwargs,
    ):
        self.check_s6la_options(d_state, fuse, h0, transition)
        super().__init__(**kwargs)  # the timm backbone, next in the MRO
        dims = [info["num_chs"] for info in self.feature_info]
        depths = [len(stage.blocks) for stage in getattr(self, self.stage_attr)]
        self.init_s6la(
            dims, depths, d_state=d_state, fuse=fuse, selective=selective, h0=h0, transition=transition,
            zero_init_readout=zero_init_readout, dt_rank=dt_rank, c_norm=c_norm,
            dt_min=dt_min, dt_max=dt_max, dt_floor=dt_floor,
        )

    def init_s6la(
        self,
        dims: list[int],
        depths: list[int],
        *,
        d_state: int,
        fuse: str,
        selective: bool,
        h0: str,
        transition: str,
        zero_init_readout: bool,
        dt_rank: int | None,
        c_norm: str,
        dt_min: float,
        dt_max: float,
        dt_floor: float,
    ) -> None:
        self.s6la_dims = list(dims)
        self.d_state, self.fuse, self.h0_mode, self.transition = d_state, fuse, h0, transition
        self.zero_init_readout = zero_init_readout
        self.s6la = nn.ModuleList(
            nn.ModuleList(
                TokenStateUnit(
                    d, d_state, fuse=fuse, selective=selective, zero_init_readout=zero_init_readout,
                    dt_rank=dt_rank, dt_min=dt_min, dt_max=dt_max, dt_floor=dt_floor, c_norm=c_norm,
                )
                for _ in range(n)
            )
            for d, n in zip(dims, depths)
        )
        if h0 == "learned":
            self.h0 = nn.Parameter(torch.empty(dims[0], d_state))
            nn.init.kaiming_normal_(self.h0)  # fan_in = N: std √(2/N)
        else:
            self.h0 = None
        self.s6la_proj = None
        self.s6la_h0 = None
        if transition == "linear":
            self.s6la_proj = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:]))
            for p in self.s6la_proj:
                nn.init.eye_(p.weight)
        elif h0 == "learned":
            self.s6la_h0 = nn.ParameterList(nn.Parameter(torch.empty(d, d_state)) for d in dims[1:])
            for p in self.s6la_h0:
                nn.init.kaiming_normal_(p)

    @torch.no_grad()
    def reset_s6la(self) -> None:
        """The S6LA init again (after a generic backbone re-init, which would overwrite it)."""
        for units in self.s6la:
            for unit in units:
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
        for p in self.s6la_h0 if self.s6la_h0 is not None else ():
            nn.init.kaiming_normal_(p)
        for lin in self.s6la_proj if self.s6la_proj is not None else ():
            nn.init.eye_(lin.weight)

    @staticmethod
    def check_s6la_options(d_state: int, fuse: str, h0: str, transition: str) -> None:
        if h0 not in H0_MODES:
            raise ValueError(f"h0 must be one of {H0_MODES}, got {h0!r}")
        if transition not in TRANSITIONS:
            raise ValueError(f"transition must be one of {TRANSITIONS}, got {transition!r}")
        if fuse not in ("mul", "concat"):
            raise ValueError(f"fuse must be 'mul' or 'concat', got {fuse!r}")
        if d_state < 1:
            raise ValueError(f"d_state must be positive, got {d_state}")

    # -- the recurrence ------------------------------------------------------------------------

    def _fresh_state(self, param: torch.Tensor | None, like: torch.Tensor, dim: int) -> torch.Tensor:
        b = like.shape[0]
        if param is not None:
            return state_float(param).expand(b, -1, -1)
        h = state_float(like.new_zeros(b, dim, self.d_state))
        if self.h0_mode == "random" and self.training:
            h.normal_(0.0, math.sqrt(2.0 / self.d_state))  # the learned h0's init distribution
        return h

    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        """h at the first block: (B, D_1, N), in state precision."""
        return self._fresh_state(self.h0, x, self.s6la_dims[0])

    def transition_state(self, h: torch.Tensor, s: int, x: torch.Tensor) -> torch.Tensor:
        """The state entering stage s ≥ 1 from the state leaving stage s-1."""
        if self.transition == "reset":
            param = self.s6la_h0[s - 1] if self.s6la_h0 is not None else None
            return self._fresh_state(param, x, self.s6la_dims[s])
        with torch.autocast(device_type=h.device.type, enabled=False):
            w = state_float(self.s6la_proj[s - 1].weight)
            return F.linear(h.transpose(1, 2), w).transpose(1, 2)

    def state_tokens(self, s: int, j: int, tokens: torch.Tensor, h: torch.Tensor):
        """Update after block j of stage s: summary c = mean token, all tokens read the new h."""
        return self.s6la[s][j].step(tokens, h, tokens.mean(dim=1))

    # -- training helpers ----------------------------------------------------------------------

    def s6la_no_weight_decay(self) -> set[str]:
        names = {"h0"} if self.h0 is not None else set()
        if self.s6la_h0 is not None:
            names |= {f"s6la_h0.{i}" for i in range(len(self.s6la_h0))}
        for s, units in enumerate(self.s6la):
            for j, unit in enumerate(units):
                names |= {f"s6la.{s}.{j}.{n}" for n in unit.no_weight_decay()}
        if self.s6la_proj is not None:
            # identity-initialised stage transitions: weight decay would pull them to zero, i.e. reset h
            names |= {f"s6la_proj.{i}.weight" for i in range(len(self.s6la_proj))}
        return names

    def prune_s6la(self, n_stages: int) -> None:
        self.s6la = self.s6la[:n_stages]
        self.s6la_dims = self.s6la_dims[:n_stages]
        if self.s6la_proj is not None:
            self.s6la_proj = self.s6la_proj[: max(n_stages - 1, 0)]
        if self.s6la_h0 is not None:
            self.s6la_h0 = nn.ParameterList(list(self.s6la_h0)[: max(n_stages - 1, 0)])

    def readouts(self) -> list[nn.Linear]:
        return [u.wC if u.fuse == "mul" else u.wcat for units in self.s6la for u in units]

    def load_vanilla_state_dict(
        self, state_dict: dict[str, torch.Tensor], strict: bool = True, zero_readout: bool = True
    ) -> list[str]:
        """Warm start from a vanilla timm state_dict of the same architecture.

        Every key of `state_dict` must exist in the model with the same shape (with `strict`;
        otherwise unknown keys are skipped). The S6LA parameters keep their init except the
        read-outs (W_C, or W_cat and its bias), which are zeroed when `zero_readout` (the
        default): the model's output then equals the vanilla model's. Returns the model's keys
        that the checkpoint did not provide.
        """
        missing = load_into_larger_model(self, state_dict, strict)
        if zero_readout:
            zero_readouts(u for units in self.s6la for u in units)
        return missing

    @torch.no_grad()
    def state_diagnostics(self, x: torch.Tensor) -> list[dict]:
        """Per block: RMS of the decay term exp(ΔA)·h and of the input term Δ·c̃·B, their ratio,
        and the mean Δ, on the batch `x` (in the model's current train/eval mode)."""
        units = [(f"{self.stage_attr}.{s}.blocks.{j}", u) for s, us in enumerate(self.s6la) for j, u in enumerate(us)]
        return record_state_terms(units, lambda: self.forward_state(x))


def build_hier(cls: type, variant: str, pretrained: bool, filter_fn, n_stages: int, **kwargs) -> nn.Module:
    """timm's builder with the feature API routed through `forward_intermediates` (the getter):
    timm's default stage-by-stage feature rewrite cannot thread a state."""
    out_indices = kwargs.pop("out_indices", tuple(range(n_stages)))
    return build_model_with_cfg(
        cls, variant, pretrained, pretrained_filter_fn=filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices), **kwargs,
    )


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
        name = type(self).__name__
        pe = self.patch_embed
        check_image_input(x, self.in_chans, max(pe.patch_size), name)
        size = tuple(x.shape[-2:])
        if pe.strict_img_size and size != tuple(pe.img_size):
            raise ValueError(
                f"{name} was built for {pe.img_size[0]}x{pe.img_size[1]} px images but got {size[0]}x{size[1]}; "
                f"create it with img_size={size} or dynamic_img_size=True"
            )
        if not pe.dynamic_img_pad and (size[0] % pe.patch_size[0] or size[1] % pe.patch_size[1]):
            raise ValueError(f"{name} needs image sizes divisible by the patch size {pe.patch_size}, got {size}")

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
        """timm's feature API: NCHW stage outputs (same arguments and outputs as timm's Swin)."""
        if output_fmt != "NCHW":
            raise ValueError(f"only NCHW intermediates are supported, got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.layers), indices)
        x, _, inter = self.run_stages(x, take, max_index if stop_early else None, norm)
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

default_cfgs = generate_default_cfgs(
    {f"s6la_swin_{s}_patch4_window7_224": swin_cfg() for s in SWIN_ARCHS}
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
