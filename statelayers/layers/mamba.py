"""S6: Mamba's block (Gu & Dao 2023, arXiv 2312.00752, Fig. 3 and Alg. 2) on this package's scan, the Mamba baseline.

Per layer, input `u_t ∈ R^H` at step t, E = expand·H channels, each with its own real diagonal state `h_t ∈ R^N`:

    x_t, z_t = split(W_in u_t)                        (E,), (E,)       input projection, two branches
    x_t      = SiLU(Σ_{k<K} w_k ⊙ x_{t-K+1+k} + c)   (E,)             causal depthwise conv, kernel K = d_conv,
                                                                       x_{t'} = 0 for t' < 0
    δ_t, B_t, C_t = split(W_x x_t)                    (R,), (N,), (N,)  B_t, C_t shared across the E channels
    Δ_t      = softplus(W_Δ δ_t + b_Δ)                (E,)             Mamba's low rank R = ceil(H/16)
    A        = -exp(A_log)                            (E, N)           real, S4D-real init A = -(1..N)
    h_t      = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t x_t) ⊗ B_t  (E, N)           ZOH for A, Euler for the input (as Mamba)
    y_t      = h_t C_t + D ⊙ x_t                      (E,)
    out_t    = W_out (y_t ⊙ SiLU(z_t))                (H,)

The recurrence runs through `linear_scan` over the E·N lanes (`a = exp(ΔA)`, `b = Δ x ⊗ B`); `S6.step` (streaming)
makes one step with the selective-SSM step `ssm_step` of `selective.py`, which S6LA's updates use too. The inits are
`init.py`'s (S4D-real `A_log`, Mamba's Δ bias). Precision (`precision.py`): Δ, B_t, C_t, the state and the read-out
are computed in float32 with autocast off (float64 for a float64 model); the projections and the conv follow autocast.

Where this differs from the official code (`mamba_ssm.modules.mamba_simple.Mamba`): x_proj and dt_proj run in state
precision (the official code runs them under autocast and only the scan in float32); padded batches (`lengths`) leave
the state unchanged past each sequence's end; the state is materialised (B, L, E·N) by the scan instead of living in
SRAM in a fused kernel, so memory grows with L·E·N (no hardware-aware kernel here).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .init import mamba_dt_bias, s4d_real_a_log
from .padding import check_lengths, mask_padding, valid_mask
from .precision import state_float
from .s7 import S7Block
from .scan import linear_scan
from .selective import ssm_step

__all__ = ["S6", "S6Block"]

_HALF = (torch.bfloat16, torch.float16)


class S6(nn.Module):
    """Mamba's mixer (the S6 layer with its projections, conv and gate): `(B, L, H) -> (B, L, H)`.

    Args:
        d_model: H, input and output width.
        d_state: N, the real state size of every channel (Mamba's default 16).
        expand: E = expand·H inner channels.  d_conv: K, the causal depthwise conv's kernel.
        dt_rank: R of the Δ projection (default ceil(H/16), as Mamba).
        dt_min, dt_max, dt_floor: the initial Δ, log-uniform in [dt_min, dt_max], floored (Mamba's dt init).
        conv_bias, bias: biases of the conv (Mamba: yes) and of the in/out projections (Mamba: no).
        n_layer: residual blocks of the model; `out_proj` starts at its default init divided by sqrt(n_layer)
            (Mamba's GPT-2-style rescale of prenorm residual branches). None: no rescale.
        scan_impl: passed to `linear_scan` ("auto" picks the fastest path for the device).
    """

    stride = 1  # no token pooling (S7Sequence reads the stride of every block's layer)

    def __init__(self, d_model: int, d_state: int = 16, *, expand: int = 2, d_conv: int = 4, dt_rank: int | None = None,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, dt_floor: float = 1e-4, conv_bias: bool = True,
                 bias: bool = False, n_layer: int | None = None, scan_impl: str = "auto"):
        super().__init__()
        if d_model < 1 or d_state < 1 or expand < 1 or d_conv < 1:
            raise ValueError(f"S6 needs d_model, d_state, expand and d_conv >= 1, got {d_model}, {d_state}, {expand}, "
                             f"{d_conv}")
        if n_layer is not None and n_layer < 1:
            raise ValueError(f"n_layer must be >= 1 or None, got {n_layer}")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.dt_range = (dt_min, dt_max, dt_floor)
        self.n_layer, self.scan_impl = n_layer, scan_impl
        e, n = self.d_inner, d_state
        self.in_proj = nn.Linear(d_model, 2 * e, bias=bias)
        self.conv1d = nn.Conv1d(e, e, d_conv, groups=e, padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(e, self.dt_rank + 2 * n, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, e)
        self.A_log = nn.Parameter(torch.empty(e, n))
        self.D = nn.Parameter(torch.empty(e))
        self.out_proj = nn.Linear(e, d_model, bias=bias)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Mamba's init: PyTorch's defaults for the projections and the conv, zero projection biases, dt_proj's
        weight uniform in ±R^-1/2 and bias from the Δ range, A_log = log(1..N) per channel, D = 1, out_proj
        rescaled by 1/sqrt(n_layer)."""
        for lin in (self.in_proj, self.out_proj):
            lin.reset_parameters()
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        if self.n_layer is not None:
            self.out_proj.weight.div_(math.sqrt(self.n_layer))
        self.conv1d.reset_parameters()
        self.x_proj.reset_parameters()
        r = self.dt_rank
        nn.init.uniform_(self.dt_proj.weight, -(r**-0.5), r**-0.5)
        self.dt_proj.bias.copy_(mamba_dt_bias(self.d_inner, *self.dt_range))
        self.A_log.copy_(s4d_real_a_log(self.d_state, self.d_inner))
        self.D.fill_(1.0)

    def no_weight_decay(self) -> set[str]:
        """As Mamba: A_log and D (its `_no_weight_decay` marks) and the Δ bias."""
        return {"A_log", "D", "dt_proj.bias"}

    def ssm_parameters(self) -> list[nn.Parameter]:
        """None: Mamba trains A with the other parameters (the S7 recipe's "ssm" learning-rate group stays empty)."""
        return []

    @property
    def A(self) -> torch.Tensor:
        """A = -exp(A_log), (E, N), in state precision."""
        return -torch.exp(state_float(self.A_log))

    # ---------------------------------------------------------------------------------------- pieces

    def _selection(self, xf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Δ (..., E), B (..., N), C (..., N)) from the conv branch `xf` in state precision (autocast off)."""
        r, n = self.dt_rank, self.d_state
        dbc = F.linear(xf, state_float(self.x_proj.weight))
        delta = F.softplus(F.linear(dbc[..., :r], state_float(self.dt_proj.weight), state_float(self.dt_proj.bias)))
        return delta, dbc[..., r:r + n], dbc[..., r + n:]

    def _read(self, h: torch.Tensor, c: torch.Tensor, xf: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(h C + D ⊙ x) ⊙ SiLU(z), over the leading axes of h (..., E, N), c (..., N), xf and z (..., E)."""
        y = (h @ c[..., None])[..., 0] + state_float(self.D).to(xf.dtype) * xf
        return y * F.silu(state_float(z))

    def _out(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """out_proj of the gated read-out, in the half precision of `like` for a half model or under autocast."""
        return self.out_proj(y.to(like.dtype) if like.dtype in _HALF else y)

    # ---------------------------------------------------------------------------------------- forward

    def forward(self, u: torch.Tensor, tau: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
                check: bool = True) -> torch.Tensor:
        """`u` (B, L, H) → (B, L, H). `lengths` (B,): valid prefix of each padded sequence, integers in [1, L]:
        padded steps are replaced by 0 where they enter and leave the state unchanged (as in `S7.forward`); outputs
        past a sequence's length are not meaningful. `tau` is accepted and not read: Mamba has no event times.
        `check=False` skips the validation of `lengths` for callers that did it once already."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"S6 expects input (batch, length, {self.d_model}), got {tuple(u.shape)}")
        if check:
            check_lengths(lengths, u.shape[0], u.shape[1])
        bsz, length, _ = u.shape
        if lengths is not None:
            lengths = lengths.to(u.device)
            u = mask_padding(u, valid_mask(lengths, length, u.device))
        x, z = self.in_proj(u).chunk(2, dim=-1)
        # causal: the conv pads K-1 steps on both sides and the last K-1 outputs (which read the future) are dropped.
        # Contiguous (B, E, L): on a strided view (x is half of in_proj's output) the CPU backward was 5-30x slower
        x = F.silu(self.conv1d(x.transpose(1, 2).contiguous())[..., :length].transpose(1, 2))
        with torch.autocast(device_type=u.device.type, enabled=False):
            xf = state_float(x)
            delta, b_t, c_t = self._selection(xf)
            a = torch.exp(delta[..., None] * self.A.to(xf.dtype))  # (B, L, E, N)
            b = (delta * xf)[..., None] @ b_t[..., None, :]  # an outer product; as a matmul its backward is too
            h = linear_scan(a.flatten(2), b.flatten(2), lengths=lengths, impl=self.scan_impl)
            y = self._read(h.view(bsz, length, self.d_inner, self.d_state), c_t, xf, z)
        return self._out(y, x)

    # ---------------------------------------------------------------------------------------- streaming

    def init_state(self, batch: int, device: torch.device | str | None = None) -> dict:
        """The streaming state before the first step: the conv's last K-1 inputs and the SSM state (E, N)."""
        dtype = self.in_proj.weight.dtype
        return {"conv": torch.zeros(batch, self.d_inner, self.d_conv - 1, dtype=dtype, device=device),
                "h": torch.zeros(batch, self.d_inner, self.d_state, dtype=state_float(self.A_log).dtype,
                                 device=device)}

    @torch.no_grad()
    def step(self, u_k: torch.Tensor, state: dict, tau_k: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """One step: `u_k` (B, H) → `(out_k, state)`, equal to `forward` on the whole sequence (to rounding)."""
        if state.get("h") is None or state.get("conv") is None:
            raise ValueError("state must come from init_state()")
        x, z = self.in_proj(u_k).chunk(2, dim=-1)
        window = torch.cat([state["conv"], x[..., None].to(state["conv"].dtype)], dim=-1)  # (B, E, K), oldest first
        x = (window * self.conv1d.weight[:, 0]).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = F.silu(x)
        with torch.autocast(device_type=u_k.device.type, enabled=False):
            xf = state_float(x)
            delta, b_t, c_t = self._selection(xf)
            h = ssm_step(state["h"], delta[:, :, None], self.A, b_t[:, None, :], xf[:, :, None]).h
            y = self._read(h, c_t, xf, z)
        return self._out(y, x), {"conv": window[..., 1:], "h": h}


class S6Block(nn.Module):
    """Mamba's residual block around an S6 layer, with S7Block's norm and time-shared dropout:

        x = x + Dropout(S6(Norm(x)))

    Norm is LayerNorm or BatchNorm as in `S7Block` (Mamba's language models use RMSNorm); there is no GELU gate
    after the layer (S5's block has one; Mamba's gate is SiLU(z) inside the layer).
    """

    # the same norm (batch statistics over valid steps only) and dropout (one mask per sequence) as S7's block
    _norm = S7Block._norm
    _time_dropout = S7Block._time_dropout

    def __init__(self, d_model: int, d_state: int = 16, *, norm: str = "layer", drop: float = 0.0, **s6_kwargs):
        super().__init__()
        if norm not in ("layer", "batch"):
            raise ValueError(f"norm must be 'layer' or 'batch', got {norm!r}")
        self.norm_kind = norm
        self.norm = nn.LayerNorm(d_model) if norm == "layer" else nn.BatchNorm1d(d_model)
        self.ssm = S6(d_model, d_state, **s6_kwargs)
        self.drop = drop

    def forward(self, x: torch.Tensor, tau: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
                check: bool = True) -> torch.Tensor:
        """`x` (B, L, d_model); `lengths` as in `S6.forward` (checked unless `check=False`)."""
        if lengths is not None:
            if check:
                check_lengths(lengths, x.shape[0], x.shape[1])
            x = mask_padding(x, valid_mask(lengths, x.shape[1], x.device))
        y = self.ssm(self._norm(x, lengths), tau, lengths, check=False).to(x.dtype)
        return x + self._time_dropout(y)

    def init_state(self, batch: int, device: torch.device | str | None = None) -> dict:
        return {"ssm": self.ssm.init_state(batch, device)}

    @torch.no_grad()
    def step(self, x_k: torch.Tensor, state: dict, tau_k: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Streaming: one step (B, d_model) → (output (B, d_model), state); batch norm uses its running statistics."""
        if self.training:
            raise RuntimeError("step() is for inference; call model.eval() first")
        xn = self.norm(x_k) if self.norm_kind == "layer" else self.norm(x_k[:, :, None])[:, :, 0]
        y, ssm_state = self.ssm.step(xn, state["ssm"], tau_k)
        return x_k + y.to(x_k.dtype), {"ssm": ssm_state}
