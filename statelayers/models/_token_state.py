"""The S6LA unit for token models (paper §4.3, Eq. 16–18, Algorithm 2; design note s6la.md §3–4).

After each transformer block, with tokens `T ∈ (B, L, D)` and a summary token `c ∈ (B, D)` (the
class token, or the mean token for models without one):

    Δ   = softplus(W_up W_down c̃ + b)         (B, D)    low rank r = ceil(D/8)
    B   = W_B c̃                                (B, N)
    h   = exp(Δ ⊗ A) ⊙ h + (Δ ⊙ c̃) ⊗ B        (B, D, N)  A = -exp(A_log), A_log ∈ (D, N)
    T  <- T + (T W_Cᵀ) hᵀ                       fuse="mul": each token reads h with its own C = W_C t
    T  <- T + W_cat(mean_D h)                   fuse="concat": the same state summary added to every token

`c̃` is `c` RMS-normalised per sample (`c_norm="rms"`, the default), as `u` is in the ResNets
(BENCHMARKS.md). Without it the input term is a small fraction of the decayed state wherever the
summary token is small: at init, 0.08–0.26 of it in the first two Swin-T stages instead of
0.6–2.3 with it.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from timm.layers import trunc_normal_

from ..layers.kernels import fused_path
from ..layers.kernels.s6la_ops import compute_dtype, token_read, token_update
from ..layers.selective import SelectiveParams, token_state_update

__all__ = ["TokenStateUnit", "TOKEN_DT_RANGE", "record_state_terms", "zero_readouts"]

# the same Δ range as the ResNets, chosen by measurement there (BENCHMARKS.md)
TOKEN_DT_RANGE = (1e-2, 1.0, 1e-4)


class TokenStateUnit(nn.Module):
    """State update and read-out of one transformer block.

    Args:
        dim: D, the token width.
        d_state: N.
        fuse: "mul" (paper Eq. 18) or "concat" (the Table 6 ablation).
        selective: False makes Δ and B learned constants.
        zero_init_readout: start W_C (or W_cat) at zero, so the unit is the identity at init.
        dt_rank: rank of the Δ projection (default ceil(D/8)).
        c_norm: "rms" or "none", normalisation of the summary token in the input term.
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 32,
        fuse: str = "mul",
        selective: bool = True,
        zero_init_readout: bool = False,
        dt_rank: int | None = None,
        dt_min: float = TOKEN_DT_RANGE[0],
        dt_max: float = TOKEN_DT_RANGE[1],
        dt_floor: float = TOKEN_DT_RANGE[2],
        c_norm: str = "rms",
    ):
        super().__init__()
        if fuse not in ("mul", "concat"):
            raise ValueError(f"fuse must be 'mul' or 'concat', got {fuse!r}")
        if c_norm not in ("rms", "none"):
            raise ValueError(f"c_norm must be 'rms' or 'none', got {c_norm!r}")
        self.dim, self.d_state, self.fuse, self.c_norm = dim, d_state, fuse, c_norm
        self.ssm = SelectiveParams(
            dim, dim, d_state, a_shape=(dim, d_state), dt_rank=dt_rank or math.ceil(dim / 8),
            selective=selective, dt_min=dt_min, dt_max=dt_max, dt_floor=dt_floor,
        )
        if selective:
            trunc_normal_(self.ssm.wB.weight, std=0.02)  # timm ViT convention
        if fuse == "mul":
            self.wC = nn.Linear(dim, d_state, bias=False)
            readout = self.wC
        else:
            self.wcat = nn.Linear(d_state, dim)
            nn.init.zeros_(self.wcat.bias)
            readout = self.wcat
        if zero_init_readout:
            nn.init.zeros_(readout.weight)
        else:
            trunc_normal_(readout.weight, std=0.02)
        self.record: list | None = None  # diagnostics: per-update RMS of both terms and mean Δ
        self.ablation: str | None = None  # diagnostics only: "inject" drops the input term

    def step(self, tokens: torch.Tensor, h: torch.Tensor, c: torch.Tensor, n_prefix: int = 0):
        """One S6LA step: the state (B, D, N) updated from the summary token c (B, D), then read by the tokens
        (B, L, D) after the first `n_prefix` (class, distillation, register tokens pass unchanged).
        Returns (tokens, h). A method, not `forward`: module hooks (FlopCounterMode's module tracker) would see
        the carried state, which under no_grad is a view of `h0` that claims requires_grad without a grad_fn.

        On the fused path (kernels/__init__.py) the update is one op that also writes the state's copy in the
        tokens' dtype, and the read-out ("mul") another: the same function as `update` and `read`."""
        if self.record is None and fused_path(c):
            h, h_c = token_update(self.ssm, h, c, self.c_norm == "rms", self.ablation == "inject",
                                  compute_dtype(tokens))
            if self.fuse == "mul":
                return token_read(tokens, h_c, self.wC.weight, n_prefix), h
        else:
            h = self.update(h, c)
        if not n_prefix:
            return self.read(tokens, h), h
        return torch.cat([tokens[:, :n_prefix], self.read(tokens[:, n_prefix:], h)], dim=1), h

    def update(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The new state from the old one (B, D, N) and the summary token c (B, D) (the torch reference)."""
        terms = token_state_update(self.ssm, h, c, rms=self.c_norm == "rms")
        if self.record is not None:
            self.record.append(dict(
                rms_decay=terms.decay.detach().square().mean().sqrt().item(),
                rms_inject=terms.inject.detach().square().mean().sqrt().item(),
                delta_mean=terms.delta.detach().mean().item(),
            ))
        return terms.decay if self.ablation == "inject" else terms.h

    def read(self, tokens: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Tokens (B, L, D) after reading the state (B, D, N) (the torch reference)."""
        h = h.to(tokens.dtype)
        if self.fuse == "mul":
            return tokens + torch.bmm(self.wC(tokens), h.transpose(1, 2))
        return tokens + self.wcat(h.mean(dim=1))[:, None, :]

    def no_weight_decay(self) -> set[str]:
        return {f"ssm.{n}" for n in self.ssm.no_weight_decay()}

    @torch.no_grad()
    def reinit(self, zero_init_readout: bool) -> None:
        """The unit's init again, after a backbone's generic re-init (timm's Linear init) overwrote it. Not named
        `init_weights` or `reset_parameters`: timm's and torch's init walks call those on every module."""
        self.ssm.reset_parameters()
        if self.ssm.selective:
            trunc_normal_(self.ssm.wB.weight, std=0.02)
        lin = self.wC if self.fuse == "mul" else self.wcat
        if zero_init_readout:
            nn.init.zeros_(lin.weight)
        else:
            trunc_normal_(lin.weight, std=0.02)
        if lin.bias is not None:
            nn.init.zeros_(lin.bias)


@torch.no_grad()
def record_state_terms(named_units: list[tuple[str, TokenStateUnit]], run) -> list[dict]:
    """Call `run()` with every unit recording its update; one row per update, labelled by block:
    RMS of the decay term exp(ΔA)·h and of the input term Δ·c̃·B, their ratio, and the mean Δ."""
    record: list[dict] = []
    for _, unit in named_units:
        unit.record = record
    try:
        run()
    finally:
        for _, unit in named_units:
            unit.record = None
    for (name, _), r in zip(named_units, record):
        r["block"] = name
        r["inject_over_decay"] = r["rms_inject"] / max(r["rms_decay"], 1e-12)
    return record


@torch.no_grad()
def zero_readouts(units) -> None:
    """Zero the read-outs (W_C, or W_cat and its bias): the units then leave the tokens unchanged."""
    for unit in units:
        lin = unit.wC if unit.fuse == "mul" else unit.wcat
        lin.weight.zero_()
        if lin.bias is not None:
            lin.bias.zero_()
