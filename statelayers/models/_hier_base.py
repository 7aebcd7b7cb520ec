"""What the hierarchical S6LA transformers share (Swin in `s6la_swin.py`, PVTv2 in `s6la_pvt.py`; design
note s6la.md §4): `HierarchicalS6LA`, a mixin that holds the per-block units, h0, the stage transitions,
weight-decay names, diagnostics and the warm start, and `build_hier`, timm's builder for such a model.

A state `h ∈ (B, D_s, N)` runs alongside the tokens of stage s and is updated after every block from the mean
token (`TokenStateUnit`, `_token_state.py`). At a stage change it follows the width: `h ← P_s h` along the channel
axis, `P_s: Linear(D_s, D_{s+1}, bias=False)` initialised to the identity (`transition="linear"`), or it restarts
from a per-stage h0 (`transition="reset"`). How the blocks are run (Swin's NHWC windows, PVTv2's token lists and
stage norms) stays with each model.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg

from ..checkpoint import load_into_larger_model
from ..layers.precision import state_float, without_autocast
from ._features import feature_cfg
from ._state_init import S6LA_PAPER, check_h0_mode, learned_h0, start_state
from ._token_state import TOKEN_DT_RANGE, TokenStateUnit, record_state_terms, zero_readouts

__all__ = ["HierarchicalS6LA", "TRANSITIONS", "build_hier", "hier_cfg"]

TRANSITIONS = ("linear", "reset")

torch.fx.wrap("state_float")  # one call in a traced graph: the precision follows a dtype known only when it runs


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
        self.h0 = learned_h0((dims[0], d_state)) if h0 == "learned" else None
        self.s6la_proj = None
        self.s6la_h0 = None
        if transition == "linear":
            self.s6la_proj = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:]))
            for p in self.s6la_proj:
                nn.init.eye_(p.weight)
        elif h0 == "learned":
            self.s6la_h0 = nn.ParameterList(learned_h0((d, d_state)) for d in dims[1:])

    @torch.no_grad()
    def reset_s6la(self) -> None:
        """The S6LA init again (after a generic backbone re-init, which would overwrite it)."""
        for units in self.s6la:
            for unit in units:
                unit.reinit(self.zero_init_readout)
        if self.h0 is not None:
            nn.init.kaiming_normal_(self.h0)
        for p in self.s6la_h0 if self.s6la_h0 is not None else ():
            nn.init.kaiming_normal_(p)
        for lin in self.s6la_proj if self.s6la_proj is not None else ():
            nn.init.eye_(lin.weight)

    @staticmethod
    def check_s6la_options(d_state: int, fuse: str, h0: str, transition: str) -> None:
        check_h0_mode(h0)
        if transition not in TRANSITIONS:
            raise ValueError(f"transition must be one of {TRANSITIONS}, got {transition!r}")
        if fuse not in ("mul", "concat"):
            raise ValueError(f"fuse must be 'mul' or 'concat', got {fuse!r}")
        if d_state < 1:
            raise ValueError(f"d_state must be positive, got {d_state}")

    # -- the recurrence ------------------------------------------------------------------------

    def _fresh_state(self, param: torch.Tensor | None, like: torch.Tensor, dim: int) -> torch.Tensor:
        draw = self.h0_mode == "random" and self.training
        return start_state(param, like, (like.shape[0], dim, self.d_state), self.d_state, draw)

    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        """h at the first block: (B, D_1, N), in state precision."""
        return self._fresh_state(self.h0, x, self.s6la_dims[0])

    def transition_state(self, h: torch.Tensor, s: int, x: torch.Tensor) -> torch.Tensor:
        """The state entering stage s ≥ 1 from the state leaving stage s-1."""
        if self.transition == "reset":
            param = self.s6la_h0[s - 1] if self.s6la_h0 is not None else None
            return self._fresh_state(param, x, self.s6la_dims[s])
        with without_autocast(h):
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
    defaults = dict(feature_cls="getter", out_indices=kwargs.pop("out_indices", tuple(range(n_stages))))
    return build_model_with_cfg(
        cls, variant, pretrained, pretrained_filter_fn=filter_fn,
        feature_cfg=feature_cfg(defaults, kwargs.pop("feature_cfg", None)), **kwargs,
    )


def hier_cfg(**kwargs) -> dict:
    """timm pretrained-cfg of an ImageNet Swin / PVTv2 with S6LA (the values of timm's own Swin and PVTv2 cfgs; no
    weights are published: `url` is empty). Each family adds its classifier and whether its input size is fixed."""
    cfg = dict(
        url="", num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.9,
        interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv="patch_embed.proj", license="apache-2.0", **S6LA_PAPER,
    )
    return {**cfg, **kwargs}
