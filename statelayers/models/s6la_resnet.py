"""S6LA on ResNets (paper §4.2, Algorithm 1; design note s6la.md §1–2).

A state `h ∈ (B, N, H, W)` runs alongside the feature maps. Block t reads `[X^{t-1}, h^{t-1}]`
through its (widened) first conv; its residual-branch output `O` then drives the update

    u   = conv_out_s(O)                 1×1 conv C_s → N, shared by the blocks of stage s
    u   = u / RMS(u)                    per sample (u_norm="rms", the default)
    z   = mean_{H,W}(u)                 summary for the selective parameters
    Δ   = softplus(W_Δ z + b_Δ),  B = W_B z,  A = -exp(A_log)
    h^t = exp(Δ A) ⊙ h^{t-1} + Δ B ⊙ u

The update of the last block is not built unless the head reads `h` (`head_concat=True`):
nothing downstream would see it, so its parameters would never get a gradient.

Two implementations of the same forward (tests hold them equal): the torch reference (`ssm.conv_state_update`,
the widened conv as a GEMM accumulated into the x-part, see `conv_on_concat`), which CPUs run, and the fused path
(`kernels.s6la_ops.conv_update`), which CUDA runs by default (`STATELAYERS_KERNELS`, kernels/__init__.py): one op
for the whole update, which also writes the state's copy in the compute dtype that the next block's widened conv
reads as `conv1(cat([X, h]))` — the fewest ops per block, which is what a GPU pays for.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import generate_default_cfgs, register_model
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..layers.kernels import fused_path
from ..layers.kernels.s6la_ops import conv_update
from ..layers.selective import SelectiveParams, conv_state_update
from ._resnet_base import (
    ARCHS,
    StatefulResNet,
    block_output,
    build_resnet,
    follow_resolution,
    imagenet_cfg,
    last_conv_norm,
    residual_branch,
    small_cfg,
    small_resnet_kwargs,
    symbolic,
)
from ._state_init import S6LA_PAPER, check_h0_mode, learned_h0, start_state

__all__ = ["S6LAResNet"]

U_NORMS = ("rms", "none")  # strings: timm.create_model drops None-valued kwargs


class S6LAResNet(StatefulResNet):
    """timm ResNet with S6LA layer aggregation.

    Args:
        d_state: N, channels of the state (paper default 32).
        selective: False makes Δ and B learned per-block constants (ablation "w/o selective").
        h0: "learned" (Kaiming-normal init), "random" (re-drawn every training forward, zeros in
            eval: the paper's "w/o trainable h") or "zeros".
        x_to_h: False never updates the state from the layers; `h0` is carried (and pooled)
            through the whole net unchanged (ablation "X does not influence h").
        head_concat: RLA-style head that also reads the final state.
        dt_min, dt_max, dt_floor: initial range of the step sizes Δ.
        u_norm: normalisation of `u = conv_out(O)` before it enters the state: "none", or "rms"
            (parameter-free, per sample over (N, H, W)), which keeps the input term on the scale
            of the state whatever the scale of the block outputs.
        small_image: CIFAR-style stem for 28–32 px images.
        **kwargs: timm `ResNet` arguments.
    """

    def __init__(
        self,
        *,
        d_state: int = 32,
        selective: bool = True,
        h0: str = "learned",
        x_to_h: bool = True,
        head_concat: bool = False,
        dt_min: float = 1e-2,
        dt_max: float = 1.0,
        dt_floor: float = 1e-4,
        u_norm: str = "rms",
        small_image: bool = False,
        **kwargs,
    ):
        check_h0_mode(h0)
        if u_norm not in U_NORMS:
            raise ValueError(f"u_norm must be one of {U_NORMS}, got {u_norm!r}")
        if d_state < 1:
            raise ValueError(f"d_state must be positive, got {d_state}")
        super().__init__(state_chs=d_state, small_image=small_image, head_concat=head_concat, **kwargs)
        self.d_state = d_state
        self.h0_mode = h0
        self.x_to_h = x_to_h
        self.u_norm = u_norm
        self.state_ablation: str | None = None  # diagnostics only: "inject" drops Δ·B·u
        self._record: list | None = None
        self.fold_projection = False  # see reparameterize()
        self._folds: dict = {}

        self.h0 = learned_h0((1, d_state, 1, 1)) if h0 == "learned" else None

        stages = self.stages()
        if x_to_h:
            self.conv_out = nn.ModuleList(nn.Conv2d(_out_chs(st), d_state, 1, bias=False) for st in stages)
            for conv in self.conv_out:
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            last = stages[-1][-1]
            for block in self.blocks():
                if block is last and not head_concat:
                    continue
                block.s6la = SelectiveParams(
                    d_state, d_state, d_state, selective=selective, dt_min=dt_min, dt_max=dt_max, dt_floor=dt_floor
                )
        else:
            self.conv_out = None

    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        b, _, hh, ww = x.shape
        draw = self.h0_mode == "random" and self.training
        return start_state(self.h0, x, (b, self.d_state, hh, ww), self.d_state, draw)

    def state_input(self, out, stage, block, hidden):
        if self.conv_out is None or getattr(block, "s6la", None) is None:
            return None
        # the fold is cached per weight version, which a torch.fx graph cannot check: traced graphs project plainly
        if self.fold_projection and not self.training and not torch.is_grad_enabled() and not symbolic(out):
            folded = self._folded_projection(stage, block)
            if folded is not None:
                return F.conv2d(hidden, *folded)
        return self.conv_out[stage](out)

    # -- inference-time fold of the state projection -------------------------------------------
    def reparameterize(self) -> S6LAResNet:
        """Compute `u` from the Bottleneck's hidden tensor at inference (eval mode, no autograd).

        `u = conv_out(bn3(conv3(y)))` with an eval-mode BatchNorm is one 1×1 conv of `y`, whose
        weight `W_out·diag(γ/σ)·W_3` has N×P entries instead of N×4P: the projection costs 4× fewer
        MACs and no longer reads the block's 4×-wider output. The outputs equal the unfolded model's
        up to float rounding. The fold is computed on first use and recomputed whenever any weight or
        BN statistic it depends on changes (training, `load_state_dict`, `.to()`), so the model can
        go on training; training forwards and forwards that record gradients never use it. Blocks
        with SE, non-BatchNorm norms or a non-1×1 last conv (BasicBlock) keep the plain projection.
        Returns the model; `fold_projection = False` switches it off again. The folds are computed
        here once, so MACs counted with `count_macs` afterwards are those of the folded forward.
        """
        self.fold_projection = True
        if self.conv_out is not None:
            with torch.no_grad():
                for s, stage in enumerate(self.stages()):
                    for block in stage:
                        if getattr(block, "s6la", None) is not None:
                            self._folded_projection(s, block)
        return self

    def _folded_projection(self, stage: int, block) -> tuple[torch.Tensor, torch.Tensor] | None:
        conv3, bn3 = last_conv_norm(block)
        foldable = (
            block.se is None and isinstance(bn3, nn.BatchNorm2d) and bn3.running_var is not None
            and conv3.kernel_size == (1, 1) and conv3.groups == 1
        )
        if not foldable:
            return None
        proj = self.conv_out[stage].weight
        sources = [t for t in (proj, conv3.weight, conv3.bias, bn3.weight, bn3.bias, bn3.running_mean,
                               bn3.running_var) if t is not None]
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in sources)
        cached = self._folds.get(id(block))
        if cached is not None and cached[0] == key:
            return cached[1]
        # bn3(conv3(y)) = W·y + b with torch's conv-BN fusion; conv_out is linear on top of it
        w3, b3 = fuse_conv_bn_weights(conv3.weight, conv3.bias, bn3.running_mean, bn3.running_var, bn3.eps,
                                      bn3.weight, bn3.bias)
        w_out = proj.flatten(1)  # (N, C)
        folded = ((w_out @ w3.flatten(1))[:, :, None, None].contiguous(), w_out @ b3)  # (N, P, 1, 1), (N,)
        if type(folded[0]) is torch.Tensor:  # not a FakeTensor of a shape-only pass (count_macs fake=True)
            self._folds[id(block)] = (key, folded)
        return folded

    def update_state(self, h, u, stage, index, block):
        if u is None:
            return h
        terms = conv_state_update(block.s6la, h, u, rms=self.u_norm == "rms")
        if self._record is not None:
            self._record.append(
                dict(
                    block=f"layer{stage + 1}.{index}",
                    rms_decay=terms.decay.detach().square().mean().sqrt().item(),
                    rms_inject=terms.inject.detach().square().mean().sqrt().item(),
                    delta_mean=terms.delta.detach().mean().item(),
                )
            )
        return terms.decay if self.state_ablation == "inject" else terms.h

    # -- the fused path: the carry is (h, h in the compute dtype) ------------------------------
    def _fused(self, x: torch.Tensor) -> bool:
        # diagnostics record the reference's intermediate terms; without updates there is nothing to fuse
        return self.conv_out is not None and self._record is None and fused_path(x)

    def initial_carry(self, x: torch.Tensor):
        if not self._fused(x):
            return super().initial_carry(x)
        h = self.initial_state(x)
        h_c = self.h0.to(x.dtype).expand_as(h) if self.h0 is not None else h.to(x.dtype)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            h_c = h_c.contiguous(memory_format=torch.channels_last)  # else the first cat falls back to NCHW
        return h, h_c

    def block_step(self, block, x, carry, stage: int, index: int):
        if not isinstance(carry, tuple):
            return super().block_step(block, x, carry, stage, index)
        h, h_c = carry
        out, hidden = residual_branch(block, torch.cat([x, h_c], dim=1), return_hidden=True)
        u = self.state_input(out, stage, block, hidden)
        x = block_output(block, x, out, u)
        h = follow_resolution(h, x)
        if u is None:  # no update after this block (the last one): keep the copy at the state's resolution
            return x, (h, h_c if h_c.shape == h.shape else h.to(h_c.dtype))
        return x, conv_update(block.s6la, h, u, self.u_norm == "rms", self.state_ablation == "inject", h_c.dtype)

    def finish_features(self, x: torch.Tensor, carry) -> torch.Tensor:
        return super().finish_features(x, carry[1] if isinstance(carry, tuple) else carry)

    def forward_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, carry = super().forward_state(x)
        return x, carry[0] if isinstance(carry, tuple) else carry

    @torch.no_grad()
    def state_diagnostics(self, x: torch.Tensor) -> list[dict]:
        """Per state update: RMS of the decay term exp(ΔA)·h and of the input term Δ·B·u, their
        ratio, and the mean Δ, on the batch `x` (in the model's current train/eval mode)."""
        self._record = []
        try:
            self.forward_state(x)
            rows = self._record
        finally:
            self._record = None
        for r in rows:
            r["inject_over_decay"] = r["rms_inject"] / max(r["rms_decay"], 1e-12)
        return rows

    def no_weight_decay(self) -> set[str]:
        names = {"h0"}
        for name, module in self.named_modules():
            if isinstance(module, SelectiveParams):
                names |= {f"{name}.{p}" for p in module.no_weight_decay()}
        return names


def _out_chs(stage: nn.Sequential) -> int:
    last = stage[-1]
    return (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels



default_cfgs = generate_default_cfgs(
    {
        **{f"s6la_resnet{d}": imagenet_cfg(**S6LA_PAPER) for d in ARCHS},
        **{f"s6la_cifar_resnet{d}": small_cfg(**S6LA_PAPER) for d in (20, 56, 110)},
    }
)


def _create(variant: str, pretrained: bool = False, **kwargs) -> S6LAResNet:
    return build_resnet(S6LAResNet, variant, pretrained, **kwargs)


def _imagenet(depth: int, pretrained: bool, **kwargs) -> S6LAResNet:
    block, layers = ARCHS[depth]
    return _create(f"s6la_resnet{depth}", pretrained, block=block, layers=layers, **kwargs)


def _small(depth: int, pretrained: bool, **kwargs) -> S6LAResNet:
    # N=16 by default here: the first stage is only 16 channels wide
    kwargs.setdefault("d_state", 16)
    return _create(
        f"s6la_cifar_resnet{depth}", pretrained, small_image=True, **small_resnet_kwargs(depth), **kwargs
    )


@register_model
def s6la_resnet18(pretrained: bool = False, **kwargs) -> S6LAResNet:
    return _imagenet(18, pretrained, **kwargs)


@register_model
def s6la_resnet34(pretrained: bool = False, **kwargs) -> S6LAResNet:
    return _imagenet(34, pretrained, **kwargs)


@register_model
def s6la_resnet50(pretrained: bool = False, **kwargs) -> S6LAResNet:
    return _imagenet(50, pretrained, **kwargs)


@register_model
def s6la_resnet101(pretrained: bool = False, **kwargs) -> S6LAResNet:
    return _imagenet(101, pretrained, **kwargs)


@register_model
def s6la_resnet152(pretrained: bool = False, **kwargs) -> S6LAResNet:
    return _imagenet(152, pretrained, **kwargs)


@register_model
def s6la_cifar_resnet20(pretrained: bool = False, **kwargs) -> S6LAResNet:
    return _small(20, pretrained, **kwargs)


@register_model
def s6la_cifar_resnet56(pretrained: bool = False, **kwargs) -> S6LAResNet:
    return _small(56, pretrained, **kwargs)


@register_model
def s6la_cifar_resnet110(pretrained: bool = False, **kwargs) -> S6LAResNet:
    return _small(110, pretrained, **kwargs)
