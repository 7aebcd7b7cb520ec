"""How an S6LA state starts: the three `h0` modes, written once for the ResNets, DeiT and Swin/PVTv2.

    "learned"  one parameter, Kaiming-normal init (fan_in = N: std √(2/N)), expanded over the batch
    "random"   zeros in eval; in training re-drawn every forward from the learned h0's init distribution
               (the paper's "w/o trainable h")
    "zeros"    zeros

The families differ only in the state's shape: `(B, N, H, W)` for the ResNets, `(B, D, N)` for the tokens.
`S6LA_PAPER` is what their pretrained cfgs say about the paper they implement.
"""

from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn as nn

from ..layers.precision import state_float

__all__ = ["H0_MODES", "S6LA_PAPER", "check_h0_mode", "learned_h0", "start_state"]

# the pretrained-cfg fields naming the paper, as timm's cfgs name theirs (`paper_ids`, `paper_name`)
S6LA_PAPER = dict(
    paper_ids="arXiv:2502.10463",
    paper_name="From Layers to States: A State Space Model Perspective to Deep Neural Network Layer Dynamics",
)

H0_MODES = ("learned", "random", "zeros")

torch.fx.wrap("state_float")  # one call in a traced graph: the precision follows a dtype known only when it runs


def check_h0_mode(h0: str) -> None:
    if h0 not in H0_MODES:
        raise ValueError(f"h0 must be one of {H0_MODES}, got {h0!r}")


def learned_h0(shape: tuple[int, ...]) -> nn.Parameter:
    """A learned initial state of `shape`, whose dim 1 is N: Kaiming-normal, fan_in = N, std √(2/N)."""
    h0 = nn.Parameter(torch.empty(shape))
    nn.init.kaiming_normal_(h0)
    return h0


def start_state(
    h0: torch.Tensor | None, like: torch.Tensor, shape: tuple[int, ...], d_state: int, draw: bool
) -> torch.Tensor:
    """The state before the first update, `shape` in state precision (on `like`'s device): the learned `h0`
    expanded to `shape`, else zeros, drawn from the learned h0's init distribution N(0, 2/N) when `draw`
    (mode "random" in training)."""
    if h0 is not None:
        return state_float(h0).expand(shape)
    h = state_float(like.new_zeros(shape))
    if draw:
        h.normal_(0.0, math.sqrt(2.0 / d_state))  # the learned h0's init distribution
    return h
