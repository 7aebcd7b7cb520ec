"""S7: a selective, stable, diagonal state-space layer across time (arXiv 2410.03464).

Per layer, input `u_k ∈ R^H` at step k, diagonal state `x_k ∈ C^P'` (or R^P):

    Δ_k  = softplus(W_Δ (W_δ u_k) + β)              (P',)   Mamba-style low rank, rank ceil(H/16)
    B_k  = reshape(W_B u_k),  C_k = reshape(W_C u_k)  (P'×H), (H×P')   input dependent
    Λ    = -1/(a w² + b) + i·ω                       continuous-time eigenvalues; the stable map
    Λ̄_k  = exp(Λ Δ_k τ_k)                           |Λ̄_k| = exp(Re Λ · Δ_k τ_k) ≤ 1 for every input
    x_k  = Λ̄_k ⊙ x_{k-1} + γ_k ⊙ (B_k u_k)          γ_k: zoh (Λ̄_k−1)/Λ · dirac 1 · async (exp(ΛΔ_k)−1)/Λ
    y_k  = Re(C_k x_k) (×2 with conjugate symmetry) + D ⊙ u_k

`τ_k` is the time since the previous event (event streams, `discretization="async"`) and 1 otherwise.
`input_dependent=False` makes Δ, B, C learned constants: the layer is then S5.

The stable map is the one of StableSSM (Wang & Li 2024) that the paper adopts. It is applied to the
real part of the continuous-time eigenvalue, so the same function gives the initial value and the
forward value (the official JAX code stores w for `Λ = -1/(a w² + b)` but evaluates the inverse map
in its forward pass; design note s7.md §2 — not reproduced here). `transition="direct"` is the paper's
literal discrete form `Λ̄_k = 1 − 1/(a w_k² + b)` with `w_k = w + W_w u_k` (real states only).

The math this layer shares lives beside it: the HiPPO-LegS and Δ inits in `init.py`, the stable map and the
discretisations in `discretization.py`, the state precision in `precision.py`, the padding mask in `padding.py`.
The recurrence itself is `statelayers.layers.scan.linear_scan` (on CUDA, `kernels/s7_ops.s7_scan` fuses the
discretisation into it); `S7.step` runs one step of it for streaming and produces exactly the scan's outputs.
Here: the layer, the `token_bilinear` op that computes B_k u_k and C_k x_k, and S5's block around the layer.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .discretization import DISCRETIZATIONS, TRANSITIONS, discretize, stable_map, stable_map_inverse
from .init import hippo_legs_eigenvalues, mamba_dt_bias
from .kernels import fused_path
from .kernels.s7_ops import s7_scan
from .padding import check_lengths, mask_padding, valid_mask
from .precision import state_float, state_like
from .scan import linear_scan

# hippo_legs_eigenvalues, stable_map and stable_map_inverse are defined in init.py and discretization.py; they stay
# listed here because this module is also the old import path `statelayers.s7` (statelayers._compat)
__all__ = ["S7", "S7Block", "hippo_legs_eigenvalues", "stable_map", "stable_map_inverse"]


# --------------------------------------------------------------------------------------------- the layer


class S7(nn.Module):
    """The S7 layer: `(B, L, H) -> (B, L', H)` with `L' = ceil(L / stride)`.

    Args:
        d_model: H, input and output width.
        d_state: P, the state size. With `conj_sym` (complex states) P' = P/2 complex states are kept
            and their conjugates are implicit; otherwise P complex states, or P real ones with
            `complex_state=False`.
        block_size: HiPPO block size; Λ is block-diagonal HiPPO-LegS repeated P/block_size times (S5).
        input_dependent: False gives S5 (Δ, B, C learned constants).
        discretization: "zoh", "dirac" or "async" (event streams; needs `tau`).
        transition: "stable" (default; Re Λ = -1/(a w² + b)), "exp" (Re Λ = -exp(w)), "clip" (Re Λ
            learned directly and clipped at -1e-4, the official code's non-stable configs) or "direct"
            (the paper's discrete map on input-dependent w_k, real states, dirac only).
        stable_a, stable_b: a > 0 and b ≥ 1/2 of the stable map.
        bidirectional: also scan the sequence backwards; C reads both states.
        dt_min, dt_max: range of the initial Δ (Mamba's log-uniform init).
        dt_rank: rank of the Δ projection (default ceil(H/16), as Mamba and S7).
        stride: read out every `stride`-th state (token pooling; the skip term D⊙u is pooled by `pool`).
        pool: "last", "avg" or "timepool" (τ-weighted mean), how u and τ are pooled when stride > 1.
        scan_impl: passed to `linear_scan` ("auto" picks the fastest path for the device).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        block_size: int | None = None,
        conj_sym: bool = True,
        complex_state: bool = True,
        input_dependent: bool = True,
        discretization: str = "zoh",
        transition: str = "stable",
        stable_a: float = 1.0,
        stable_b: float = 0.5,
        bidirectional: bool = False,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_rank: int | None = None,
        stride: int = 1,
        pool: str = "last",
        scan_impl: str = "auto",
    ):
        super().__init__()
        if discretization not in DISCRETIZATIONS:
            raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {discretization!r}")
        if transition not in TRANSITIONS:
            raise ValueError(f"transition must be one of {TRANSITIONS}, got {transition!r}")
        if pool not in ("last", "avg", "timepool"):
            raise ValueError(f"pool must be 'last', 'avg' or 'timepool', got {pool!r}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if not complex_state:
            conj_sym = False
        block_size = block_size or d_state
        if d_state % block_size:
            raise ValueError(f"d_state={d_state} must be a multiple of block_size={block_size}")
        if conj_sym and block_size % 2:
            raise ValueError(f"conj_sym needs an even block_size, got {block_size}")
        if stable_a <= 0 or stable_b < 0.5:
            raise ValueError(f"the stable map needs a > 0 and b >= 1/2, got a={stable_a}, b={stable_b}")
        if transition == "direct":
            if complex_state or discretization != "dirac" or not input_dependent:
                raise ValueError("transition='direct' is the paper's real discrete map: it needs complex_state=False, "
                                 "discretization='dirac' and input_dependent=True")
        self.d_model, self.d_state = d_model, d_state
        self.conj_sym, self.complex_state = conj_sym, complex_state
        self.input_dependent, self.discretization, self.transition = input_dependent, discretization, transition
        self.stable_a, self.stable_b = stable_a, stable_b
        self.bidirectional, self.stride, self.pool, self.scan_impl = bidirectional, stride, pool, scan_impl
        self.n_states = d_state // 2 if conj_sym else d_state  # P'
        self.dt_range = (dt_min, dt_max)
        n, h = self.n_states, d_model
        dirs = 2 if bidirectional else 1
        parts = 2 if complex_state else 1  # real and imaginary halves of B and C

        # continuous-time eigenvalues: a real-part parameter (through the transition map) and an imaginary part
        self.lambda_w = nn.Parameter(torch.empty(n))
        self.lambda_im = nn.Parameter(torch.empty(n)) if complex_state else None
        if input_dependent:
            self.dt_rank = dt_rank or math.ceil(d_model / 16)
            extra = n if transition == "direct" else 0  # w_k's input-dependent part
            # one projection for δ, B and C, as the official code (its bias included: exact parameter counts)
            self.x_proj = nn.Linear(h, self.dt_rank + parts * n * h + parts * dirs * n * h + extra)
            self.dt_proj = nn.Linear(self.dt_rank, n)
        else:
            self.log_dt = nn.Parameter(torch.empty(n))
            self.B = nn.Parameter(torch.empty(parts, n, h))
            self.C = nn.Parameter(torch.empty(parts, h, dirs * n))
        self.D = nn.Parameter(torch.empty(h))
        self._block_size = block_size
        self.reset_parameters()

    # ---------------------------------------------------------------------------------------- init

    @torch.no_grad()
    def reset_parameters(self) -> None:
        lam = hippo_legs_eigenvalues(self._block_size)
        if self.conj_sym:
            lam = lam[np.argsort(lam.imag)][self._block_size // 2:]  # one of each conjugate pair (Im > 0)
        lam = np.tile(lam, self.d_state // self._block_size)
        re = torch.tensor(lam.real, dtype=torch.float32)
        if self.transition == "stable":
            self.lambda_w.copy_(stable_map_inverse(re, self.stable_a, self.stable_b))
        elif self.transition == "exp":
            self.lambda_w.copy_(torch.log(-re))
        elif self.transition == "clip":
            self.lambda_w.copy_(re)
        else:  # direct: w such that Λ̄ = 1 - 1/(a w² + b) starts at exp(Re Λ · dt) for a mid-range dt
            dt = math.sqrt(self.dt_range[0] * self.dt_range[1])
            target = torch.exp(re * dt)
            self.lambda_w.copy_(torch.sqrt((1.0 / (1.0 - target) - self.stable_b) / self.stable_a))
        if self.lambda_im is not None:
            self.lambda_im.copy_(torch.tensor(lam.imag, dtype=torch.float32))
        n, h = self.n_states, self.d_model
        if self.input_dependent:
            # Flax's default Dense init (LeCun normal, zero bias), as the official code
            nn.init.trunc_normal_(self.x_proj.weight, std=1.0 / math.sqrt(h) / 0.8796, a=-2 / math.sqrt(h) / 0.8796,
                                  b=2 / math.sqrt(h) / 0.8796)
            nn.init.zeros_(self.x_proj.bias)
            r = self.dt_rank
            nn.init.uniform_(self.dt_proj.weight, -(r**-0.5), r**-0.5)
            self.dt_proj.bias.copy_(mamba_dt_bias(n, *self.dt_range))
        else:
            lo, hi = math.log(self.dt_range[0]), math.log(self.dt_range[1])
            self.log_dt.uniform_(lo, hi)
            nn.init.normal_(self.B, std=1.0 / math.sqrt(2 * h))
            nn.init.normal_(self.C, std=1.0 / math.sqrt(2 * n))
        nn.init.normal_(self.D)

    def no_weight_decay(self) -> set[str]:
        names = {"lambda_w", "D"} | ({"lambda_im"} if self.lambda_im is not None else set())
        if self.input_dependent:
            names.add("dt_proj.bias")
        else:
            names.add("log_dt")
        return names

    def ssm_parameters(self) -> list[nn.Parameter]:
        """The S7 recipe's "ssm" group (own learning rate): eigenvalues and static B (official grouping)."""
        params = [self.lambda_w] + ([self.lambda_im] if self.lambda_im is not None else [])
        if not self.input_dependent:
            params += [self.B, self.log_dt]
        return params

    # ---------------------------------------------------------------------------------------- pieces

    def eigenvalues(self) -> torch.Tensor:
        """Continuous-time Λ (P',), complex (or real) in float32/float64."""
        w = state_float(self.lambda_w)
        if self.transition == "stable":
            re = stable_map(w, self.stable_a, self.stable_b)
        elif self.transition == "exp":
            re = -torch.exp(w)
        elif self.transition == "clip":
            re = w.clamp(max=-1e-4)
        else:
            raise RuntimeError("transition='direct' has no continuous-time eigenvalues")
        if self.lambda_im is None:
            return re
        return torch.complex(re, self.lambda_im.to(re.dtype))

    def _rows(self) -> tuple[int, int, int]:
        """Row ranges of `x_proj` for δ, B and C (and w_k of the direct transition): the official layout."""
        n, h = self.n_states, self.d_model
        dirs, parts = (2 if self.bidirectional else 1), (2 if self.complex_state else 1)
        r0 = self.dt_rank
        r1 = r0 + parts * n * h
        r2 = r1 + parts * dirs * n * h
        return r0, r1, r2

    def _elements(self, u: torch.Tensor, tau: torch.Tensor | None):
        """The scan's elements (Λ̄_k, γ_k ⊙ B_k u_k) in float32 (float64 for a float64 model), computed with
        autocast off: exp(ΛΔ) of a bf16 Δ loses the small decays that carry information over long spans."""
        if self.discretization == "async" and tau is None:
            raise ValueError("discretization='async' needs tau, the time since the previous event, of shape (B, L)")
        with torch.autocast(device_type=u.device.type, enabled=False):
            return self._discretize(state_float(u), tau)

    def _discretization_inputs(self, uf: torch.Tensor):
        """(Δ (B, L, P'), B_k u_k (parts, B, L, P')) of the input in state precision (`uf`)."""
        n, h = self.n_states, self.d_model
        parts = 2 if self.complex_state else 1
        lead = uf.shape[:-1]
        if self.input_dependent:
            w, bias = state_float(self.x_proj.weight), state_float(self.x_proj.bias)
            r0, r1, _ = self._rows()
            d = F.linear(uf, w[:r0], bias[:r0])
            delta = F.softplus(F.linear(d, state_float(self.dt_proj.weight), state_float(self.dt_proj.bias)))
            # B_k u_k without materialising the per-token B_k (P'×H per token): a chunked bilinear form
            flat = uf.reshape(-1, h)
            bu = token_bilinear(flat, flat, w[r0:r1], bias[r0:r1], parts * n)
            return delta, bu.view(*lead, parts, n).movedim(-2, 0)
        delta = torch.exp(state_float(self.log_dt)).to(uf.dtype).expand(*lead, n)
        return delta, torch.einsum("blh,cph->cblp", uf, state_float(self.B).to(uf.dtype))

    def _discretize(self, uf: torch.Tensor, tau: torch.Tensor | None):
        delta, bu = self._discretization_inputs(uf)
        if self.transition == "direct":
            w, bias = state_float(self.x_proj.weight), state_float(self.x_proj.bias)
            wk = F.linear(uf, w[self._rows()[2]:], bias[self._rows()[2]:])
            wt = self.lambda_w.to(uf.dtype) + wk
            return 1.0 - 1.0 / (self.stable_a * wt.square() + self.stable_b), bu[0]
        cdtype = torch.complex128 if uf.dtype == torch.float64 else torch.complex64
        lam = self.eigenvalues().to(cdtype if self.complex_state else uf.dtype)
        b = torch.complex(bu[0], bu[1]) if self.complex_state else bu[0]
        return discretize(lam, delta, b, tau, self.discretization)

    def _fused_scan(self, u: torch.Tensor) -> bool:
        """Discretise inside the scan kernels (kernels/s7_ops.py)? On CUDA by default (scan_impl "auto" and the
        kernel setting, kernels/__init__.py), wherever `scan_impl="triton"`; complex states only."""
        if not self.complex_state or self.transition == "direct" or self.scan_impl not in ("auto", "triton"):
            return False
        return self.scan_impl == "triton" or fused_path(u)

    def _states_fused(self, u: torch.Tensor, tau: torch.Tensor | None, lengths: torch.Tensor | None):
        """The states (B, L, dirs·P') from the fused discretisation and scan; the same as the reference path."""
        if self.discretization == "async" and tau is None:
            raise ValueError("discretization='async' needs tau, the time since the previous event, of shape (B, L)")
        with torch.autocast(device_type=u.device.type, enabled=False):
            delta, bu = self._discretization_inputs(u.float())
            lam = self.eigenvalues().to(torch.complex64)
            x = s7_scan(delta, bu, lam, tau, lengths, self.discretization)
            if self.bidirectional:
                x = torch.cat([x, s7_scan(delta, bu, lam, tau, lengths, self.discretization, reverse=True)], dim=-1)
        return x

    def _read(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Re(C_k x_k) for states x (B, L', dirs·P') and the inputs u (B, L', H) that C_k is computed from."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            h, k = self.d_model, x.shape[-1]  # k = dirs·P'
            v = torch.cat([x.real, -x.imag], dim=-1) if self.complex_state else x  # Re(C x) = C_re x_re − C_im x_im
            parts = 2 if self.complex_state else 1
            if self.input_dependent:
                _, r1, r2 = self._rows()
                # rows are laid out (part, h, k); the bilinear form wants (h, part·k)
                w = state_float(self.x_proj.weight)[r1:r2].view(parts, h, k, -1).transpose(0, 1).reshape(h * parts * k,
                                                                                                        -1)
                bias = state_float(self.x_proj.bias)[r1:r2].view(parts, h, k).transpose(0, 1).reshape(-1)
                y = token_bilinear(state_float(u).reshape(-1, h), v.reshape(-1, parts * k), w, bias, h)
                y = y.view(*x.shape[:-1], h)
            else:
                c = state_float(self.C).to(v.dtype).permute(1, 0, 2).reshape(h, parts * k)
                y = v @ c.transpose(0, 1)
            return 2.0 * y if self.conj_sym else y

    def _pool(self, u: torch.Tensor, tau: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """u (B, L, H) and τ (B, L) pooled over windows of `stride` tokens (L a multiple of stride)."""
        s = self.stride
        bsz, length, h = u.shape
        uw = u.view(bsz, length // s, s, h)
        tw = None if tau is None else tau.view(bsz, length // s, s)
        if self.pool == "last":
            up = uw[:, :, -1]
        elif self.pool == "avg" or tw is None:
            up = uw.mean(dim=2)
        else:
            weights = tw / tw.sum(dim=2, keepdim=True).clamp_min(1e-12)
            up = (uw * weights[..., None].to(uw.dtype)).sum(dim=2)
        return up, (None if tw is None else tw.sum(dim=2))

    # ---------------------------------------------------------------------------------------- forward

    def forward(self, u: torch.Tensor, tau: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
                check: bool = True) -> torch.Tensor:
        """`u` (B, L, H) → (B, ceil(L/stride), H). `tau` (B, L): time steps (async); `lengths` (B,): valid
        prefix of each padded sequence, integers in [1, L] — padded steps leave the state unchanged, so a backward
        scan starts at each sequence's own end, and whatever they hold (NaN included) is replaced by 0 where it
        enters. Output steps past a sequence's pooled length are not meaningful. `check=False` skips the
        validation of `lengths` (`padding.check_lengths`) for callers that did it once already."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"S7 expects input (batch, length, {self.d_model}), got {tuple(u.shape)}")
        if tau is not None and tau.shape != u.shape[:2]:
            raise ValueError(f"tau must have shape {tuple(u.shape[:2])} (batch, length), got {tuple(tau.shape)}")
        if check:
            check_lengths(lengths, u.shape[0], u.shape[1])
        s = self.stride
        if s > 1 and u.shape[1] % s:  # pad to whole windows; padded steps are masked below
            extra = s - u.shape[1] % s
            if lengths is None:
                lengths = torch.full((u.shape[0],), u.shape[1], dtype=torch.long, device=u.device)
            u = F.pad(u, (0, 0, 0, extra))
            tau = None if tau is None else F.pad(tau, (0, extra))
        if lengths is not None:
            lengths = lengths.to(u.device)
            valid = valid_mask(lengths, u.shape[1], u.device)
            u, tau = mask_padding(u, valid), mask_padding(tau, valid)  # padded steps hold 0 (never NaN) from here on
        # padded steps leave the state unchanged (the Triton kernels skip them themselves; other paths mask a, b)
        if self._fused_scan(u):
            x = self._states_fused(u, tau, lengths)
        else:
            a, b = self._elements(u, tau)
            x = linear_scan(a, b, lengths=lengths, impl=self.scan_impl)
            if self.bidirectional:
                x = torch.cat([x, linear_scan(a, b, reverse=True, lengths=lengths, impl=self.scan_impl)], dim=-1)
        u_read = u  # padded steps were zeroed above: they add nothing to a (partial) pooling window
        if s > 1:  # read out the state at the end of each window, with C_k of that step
            x, u_read = x[:, s - 1::s], u[:, s - 1::s]
            u, _ = self._pool(u, tau)
        y = self._read(x, u_read) + state_like(self.D, x) * state_like(u, x)
        return y.to(u.dtype) if u.dtype in (torch.bfloat16, torch.float16) else y

    # ---------------------------------------------------------------------------------------- streaming

    def init_state(self, batch: int, device: torch.device | str | None = None) -> dict:
        """The streaming state before the first token."""
        if self.bidirectional:
            raise ValueError("a bidirectional S7 layer reads the future; it cannot run step by step")
        dtype = torch.complex64 if self.complex_state else torch.float32
        return {"x": torch.zeros(batch, self.n_states, dtype=dtype, device=device), "pool": {}}

    @torch.no_grad()
    def step(self, u_k: torch.Tensor, state: dict, tau_k: torch.Tensor | None = None
             ) -> tuple[torch.Tensor | None, dict]:
        """One step: `u_k` (B, H), `tau_k` (B,) → `(y_k, state)`; `y_k` is None between the outputs of a
        strided layer (it emits at the end of each window). Equals `forward` on the whole sequence."""
        if state.get("x") is None:
            raise ValueError("state must come from init_state()")
        tau = None if tau_k is None else tau_k[:, None]
        a, b = self._elements(u_k[:, None], tau)
        x = a[:, 0] * state["x"] + b[:, 0]
        u_read = u_k
        new = dict(state, x=x)
        if self.stride > 1:  # the skip input D⊙u is pooled over the window; emit at its end
            u_k, new["pool"] = _pool_step(u_k, state["pool"], tau_k, self.stride, self.pool)
            if u_k is None:
                return None, new
        y = self._read(x[:, None], u_read[:, None])[:, 0] + state_like(self.D, x) * state_like(u_k, x)
        return y.to(u_k.dtype) if u_k.dtype in (torch.bfloat16, torch.float16) else y, new


# `out[n, m] = Σ_k (W u_n + b)[m·K + k] · v_n[k]`, in chunks of tokens: `C_k x_k` (and `B_k u_k`) with the
# per-token matrix `reshape(W u_k + b, (M, K))` never stored for the whole sequence: each chunk's matrices are made,
# used and dropped while they are in cache, and the backward pass makes them again. Materialised, they are M·K
# floats per token (1,024 for H=32, P=16, complex) and a sequence's worth of them made the layer memory-bound and
# 10× slower on CPU. A custom op with its backward, so that torch.compile sees one op (not the chunk loop).


@torch.library.custom_op("statelayers::token_bilinear", mutates_args=())
def _token_bilinear(u: torch.Tensor, v: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, m: int,
                    chunk: int) -> torch.Tensor:
    n_tok, k = v.shape
    out = u.new_empty(n_tok, m)
    for s0 in range(0, n_tok, chunk):
        z = torch.addmm(bias, u[s0:s0 + chunk], weight.t()).view(-1, m, k)
        out[s0:s0 + chunk] = torch.bmm(z, v[s0:s0 + chunk, :, None])[..., 0] if k > 64 else \
            (z * v[s0:s0 + chunk, None, :]).sum(-1)
    return out


@_token_bilinear.register_fake
def _(u, v, weight, bias, m, chunk):
    return u.new_empty(v.shape[0], m)


@torch.library.custom_op("statelayers::token_bilinear_backward", mutates_args=())
def _token_bilinear_backward(g: torch.Tensor, u: torch.Tensor, v: torch.Tensor, weight: torch.Tensor,
                             bias: torch.Tensor, m: int, chunk: int
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    n_tok, k = v.shape
    gu, gv = torch.empty_like(u), torch.empty_like(v)
    gw, gb = torch.zeros_like(weight), torch.zeros_like(bias)
    for s0 in range(0, n_tok, chunk):
        uc, vc, gc = u[s0:s0 + chunk], v[s0:s0 + chunk], g[s0:s0 + chunk]
        z = torch.addmm(bias, uc, weight.t()).view(-1, m, k)
        gz = (gc[:, :, None] * vc[:, None, :]).reshape(-1, m * k)
        gw.addmm_(gz.t(), uc)
        gb += gz.sum(0)
        gu[s0:s0 + chunk] = gz @ weight
        gv[s0:s0 + chunk] = (z * gc[:, :, None]).sum(1)
    return gu, gv, gw, gb


@_token_bilinear_backward.register_fake
def _(g, u, v, weight, bias, m, chunk):
    return torch.empty_like(u), torch.empty_like(v), torch.empty_like(weight), torch.empty_like(bias)


def _bilinear_setup(ctx, inputs, output):
    u, v, weight, bias, m, chunk = inputs
    ctx.save_for_backward(u, v, weight, bias)
    ctx.m, ctx.chunk = m, chunk


@torch.autograd.function.once_differentiable
def _bilinear_backward(ctx, g):
    u, v, weight, bias = ctx.saved_tensors
    return (*_token_bilinear_backward(g.contiguous(), u, v, weight, bias, ctx.m, ctx.chunk), None, None)


_token_bilinear.register_autograd(_bilinear_backward, setup_context=_bilinear_setup)


def token_bilinear(u: torch.Tensor, v: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, m: int,
                   chunk: int = 2048) -> torch.Tensor:
    """`out[n] = reshape(weight @ u[n] + bias, (m, K)) @ v[n]` for tokens u (N, H), v (N, K) (see above).
    u and v may be the same tensor (B_k u_k)."""
    if u.shape[0] == 0:
        return u.new_zeros(0, m)
    return _token_bilinear(u.contiguous(), v.contiguous(), weight.contiguous(), bias.contiguous(), m, chunk)


# --------------------------------------------------------------------------------------------- the block


class S7Block(nn.Module):
    """S5's block around an S7 layer (pre-norm, GELU-gated, dropout, residual).

        y = S7(Norm(x));  y = y ⊙ σ(W_g Dropout(GELU(y)));  x = Pool(x) [+ Linear] + Dropout(y)

    The dropout mask is shared across time (one mask per sequence and channel), as the official code.
    `d_out` ≠ `d_model` widens the output (state expansion between stages); the skip path is pooled
    the same way as the layer's input when `stride` > 1.
    """

    def __init__(self, d_model: int, d_state: int = 64, *, d_out: int | None = None, norm: str = "layer",
                 drop: float = 0.0, **s7_kwargs):
        super().__init__()
        if norm not in ("layer", "batch"):
            raise ValueError(f"norm must be 'layer' or 'batch', got {norm!r}")
        d_out = d_out or d_model
        self.norm_kind = norm
        self.norm = nn.LayerNorm(d_model) if norm == "layer" else nn.BatchNorm1d(d_model)
        self.ssm = S7(d_model, d_state, **s7_kwargs)
        self.out = nn.Linear(d_model, d_out) if d_out != d_model else None
        self.gate = nn.Linear(d_out, d_out)
        self.drop = drop
        self.skip_proj = nn.Linear(d_model, d_out) if d_out != d_model else None

    def _norm(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if self.norm_kind == "layer":
            return self.norm(x)
        if lengths is None or not self.training:
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        # batch statistics over the valid steps only, so padding does not shift them
        valid = valid_mask(lengths, x.shape[1], x.device)
        out = x.clone()
        out[valid] = self.norm(x[valid])
        return out

    def _time_dropout(self, y: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop == 0:
            return y
        keep = torch.empty(y.shape[0], 1, y.shape[2], device=y.device).bernoulli_(1 - self.drop)
        return y * keep.to(y.dtype) / (1 - self.drop)

    def _gate(self, y: torch.Tensor) -> torch.Tensor:
        if self.out is not None:
            y = self.out(y)
        g = self.gate(self._time_dropout(F.gelu(y)))
        return y * torch.sigmoid(g)

    def _skip(self, x: torch.Tensor, tau: torch.Tensor | None, lengths: torch.Tensor | None) -> torch.Tensor:
        s = self.ssm.stride
        if s > 1:
            if lengths is not None:  # padded steps add nothing to a pooling window, as in the layer itself
                x = mask_padding(x, valid_mask(lengths, x.shape[1], x.device))
            if x.shape[1] % s:
                x = F.pad(x, (0, 0, 0, s - x.shape[1] % s))
                tau = None if tau is None else F.pad(tau, (0, s - tau.shape[1] % s))
            x, _ = self.ssm._pool(x, tau)
        return self.skip_proj(x) if self.skip_proj is not None else x

    def forward(self, x: torch.Tensor, tau: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
                check: bool = True) -> torch.Tensor:
        """`x` (B, L, d_model); `lengths` as in `S7.forward` (checked unless `check=False`): the padded steps of `x`
        and `tau` are replaced by 0 where they enter, so NaN there reaches neither the norm nor the skip's pool."""
        if lengths is not None:
            if check:
                check_lengths(lengths, x.shape[0], x.shape[1])
            valid = valid_mask(lengths, x.shape[1], x.device)
            x, tau = mask_padding(x, valid), mask_padding(tau, valid)
        y = self.ssm(self._norm(x, lengths), tau, lengths, check=False).to(x.dtype)
        return self._skip(x, tau, lengths) + self._time_dropout(self._gate(y))

    @torch.no_grad()
    def step(self, x_k: torch.Tensor, state: dict, tau_k: torch.Tensor | None = None
             ) -> tuple[torch.Tensor | None, dict]:
        """Streaming: one token (B, d_model) → (output (B, d_out) or None inside a window, state).
        Batch norm uses its running statistics (eval mode), as `forward` does in eval."""
        if self.training:
            raise RuntimeError("step() is for inference; call model.eval() first")
        if self.norm_kind == "layer":
            xn = self.norm(x_k)
        else:
            xn = self.norm(x_k[:, :, None])[:, :, 0]
        y, ssm_state = self.ssm.step(xn, state["ssm"], tau_k)
        # the skip path pools x over the window exactly as the layer pools its input
        pooled = _pool_step(x_k, state["skip"], tau_k, self.ssm.stride, self.ssm.pool)
        new = {"ssm": ssm_state, "skip": pooled[1]}
        if y is None:
            return None, new
        skip = pooled[0]
        if self.skip_proj is not None:
            skip = self.skip_proj(skip)
        return skip + self._gate(y.to(x_k.dtype)), new

    def init_state(self, batch: int, device: torch.device | str | None = None) -> dict:
        return {"ssm": self.ssm.init_state(batch, device), "skip": {}}


def _pool_step(x_k, state, tau_k, stride, pool):
    """Running pool of the skip input over a window of `stride` steps: (pooled or None, state)."""
    if stride == 1:
        return x_k, state
    w = tau_k[:, None].to(x_k.dtype) if (pool == "timepool" and tau_k is not None) else torch.ones_like(x_k[:, :1])
    u_sum = state["u_sum"] + w * x_k if state else w * x_k
    w_sum = state["w_sum"] + w if state else w
    count = state.get("count", 0) + 1
    if count % stride:
        return None, {"count": count, "u_sum": u_sum, "w_sum": w_sum}
    if pool == "last":
        return x_k, {}
    if pool == "avg":
        return u_sum / count, {}
    return u_sum / w_sum.clamp_min(1e-12), {}
