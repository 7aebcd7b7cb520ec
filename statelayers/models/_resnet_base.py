"""What every layer-aggregation ResNet here shares, built on timm's own `ResNet` and blocks.

timm's `BasicBlock`/`Bottleneck.forward` returns `act(branch(x) + shortcut(x))` in one piece.
Layer aggregation needs the residual-branch output `O` on its own and, for S6LA and RLA, a
block input that is `[x, h]` for the branch but `x` for the shortcut. `residual_branch` runs the
block's own submodules in timm's order to get exactly that, so timm checkpoints load unchanged.

`StatefulResNet` threads a state `h` through the blocks: `[X, h]` enters each block's first conv
(widened by `state_chs` input channels), the state is updated from `O` after every block, and is
average-pooled where a block halves the resolution. Subclasses say how the state starts
(`initial_state`) and how it is updated (`update_state`).
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from timm.models import build_model_with_cfg, checkpoint_seq
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch.utils.checkpoint import checkpoint

from ..checkpoint import load_into_larger_model
from ._features import feature_cfg, feature_indices
from ._inputs import check_image_input

__all__ = [
    "residual_branch",
    "last_conv_norm",
    "block_shortcut",
    "block_output",
    "follow_resolution",
    "symbolic",
    "to_small_image_stem",
    "StagedResNet",
    "StatefulResNet",
    "ARCHS",
    "SMALL_DEPTHS",
    "imagenet_cfg",
    "small_cfg",
    "build_resnet",
]

# blocks per stage of the ImageNet ResNets (He et al. 2016)
ARCHS: dict[int, tuple[type, tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
# CIFAR-style ResNets (He et al. 2016, §4.2): 6n+2 layers, BasicBlock, 16/32/64 channels
SMALL_DEPTHS = (20, 32, 44, 56, 110)
SMALL_CHANNELS = (16, 32, 64)


def imagenet_cfg(**kwargs) -> dict:
    """timm pretrained-cfg of an ImageNet ResNet (no weights are published: `url` is empty). The families add
    their paper (`paper_ids`, `paper_name`); the license is this package's."""
    cfg = dict(
        url="", num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
        interpolation="bilinear", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        first_conv="conv1", classifier="fc", license="apache-2.0",
    )
    return {**cfg, **kwargs}


def small_cfg(**kwargs) -> dict:
    """timm pretrained-cfg of a small-image ResNet: Fashion-MNIST-like 1×28×28, 10 classes."""
    return imagenet_cfg(num_classes=10, input_size=(1, 28, 28), crop_pct=1.0, mean=(0.5,), std=(0.5,), **kwargs)


def build_resnet(cls: type, variant: str, pretrained: bool, **kwargs) -> nn.Module:
    """timm's builder with the feature API routed through `forward_intermediates`
    (the stage-by-stage rewrite timm uses by default cannot thread a state); a caller's
    `feature_cfg=dict(feature_cls="fx")` gets its torch.fx graph (`_features.py`)."""
    n_features = 4 if "cifar_" in variant else 5
    defaults = dict(feature_cls="getter", out_indices=tuple(range(n_features)))
    return build_model_with_cfg(
        cls, variant, pretrained, feature_cfg=feature_cfg(defaults, kwargs.pop("feature_cfg", None)), **kwargs
    )


def residual_branch(
    block: nn.Module, z: torch.Tensor, h: torch.Tensor | None = None, return_hidden: bool = False
):
    """The residual-branch output `O` of a timm BasicBlock/Bottleneck (before the shortcut add).

    With a state `h`, the first conv reads `[z, h]` (see `conv_on_concat`). `return_hidden=True`
    returns `(O, hidden)`, `hidden` being the input of the branch's last conv (`conv3` of a
    Bottleneck, `conv2` of a BasicBlock)."""
    if not isinstance(block, (Bottleneck, BasicBlock)):
        raise TypeError(f"unsupported block type {type(block).__name__}")
    first = block.conv1(z) if h is None else conv_on_concat(block.conv1, z, h)
    if isinstance(block, Bottleneck):
        z = block.act1(block.bn1(first))
        hidden = block.aa(block.act2(block.drop_block(block.bn2(block.conv2(z)))))
        z = block.bn3(block.conv3(hidden))
    else:
        hidden = block.aa(block.act1(block.drop_block(block.bn1(first))))
        z = block.bn2(block.conv2(hidden))
    if block.se is not None:
        z = block.se(z)
    if block.drop_path is not None:
        z = block.drop_path(z)
    return (z, hidden) if return_hidden else z


def last_conv_norm(block: nn.Module) -> tuple[nn.Conv2d, nn.Module]:
    """The last conv of a block's residual branch and the norm after it."""
    return (block.conv3, block.bn3) if isinstance(block, Bottleneck) else (block.conv2, block.bn2)


def conv_on_concat(conv: nn.Conv2d, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """`conv(cat([x, h], dim=1))` without building the concatenation: the conv is linear, so it is
    the x-slice of the weights on `x` plus the h-slice on `h`.

    Why: the concatenation copies the whole block input every block (and keeps the copy for the
    backward), and under channels_last it mixes a channels_last `x` with an NCHW `h` into an NCHW
    result, so the conv runs in the slow layout. For a 1×1 stride-1 conv (a Bottleneck's conv1) the
    h-part is a matrix product accumulated straight into the x-part's output (GEMM with beta=1),
    so no separate output-sized tensor is written and added. BENCHMARKS.md ("Cost of aggregation")
    has what this saved on ResNet-50. Otherwise both halves go through the conv's own forward, so
    its padding mode applies to `h` too.
    """
    c = x.shape[1]
    w = conv.weight
    out = conv._conv_forward(x, w[:, :c], conv.bias)
    # (under torch.fx tracing the sizes are unknown; a stride-1 pointwise conv keeps them, and h has x's)
    if _is_pointwise(conv) and (symbolic(out) or out.shape[-2:] == h.shape[-2:]):
        fused = _accumulate_pointwise(out, h.to(out.dtype), w[:, c:].flatten(1).to(out.dtype))
        if fused is not None:
            return fused
    return out + conv._conv_forward(h.to(x.dtype), w[:, c:], None)


def _is_pointwise(conv: nn.Conv2d) -> bool:
    return (
        conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1
        and conv.dilation == (1, 1) and conv.padding in ((0, 0), "valid")
    )


def _accumulate_pointwise(out: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
    """`out + conv1x1(h, w)` as one GEMM that accumulates into `out` (in place when no gradient is
    recorded); None when `out` has neither the NCHW nor the channels_last layout."""
    b, p, hh, ww = out.shape
    if symbolic(out):
        # torch.fx tracing: a graph cannot branch on the layout, nor keep the grad mode it was traced in. It takes
        # the NCHW arithmetic out of place (reshape: a channels_last input is copied), so it gives eager's values
        acc = torch.baddbmm(out.reshape(b, p, hh * ww), w.expand(b, -1, -1), h.reshape(b, h.shape[1], hh * ww))
        return acc.view(b, p, hh, ww)
    inplace = not torch.is_grad_enabled()
    if out.is_contiguous():
        # per sample: out[p, hw] += w[p, n] @ h[n, hw]
        # h's channels by name, not -1: an empty batch (b = 0) cannot infer them
        acc, w_b, h_b = out.view(b, p, hh * ww), w.expand(b, -1, -1), h.reshape(b, h.shape[1], hh * ww)
        if inplace:
            acc.baddbmm_(w_b, h_b)
            return out
        return torch.baddbmm(acc, w_b, h_b).view(b, p, hh, ww)
    if out.is_contiguous(memory_format=torch.channels_last):
        # all pixels at once: out[bhw, p] += h[bhw, n] @ w[p, n]ᵀ
        acc, h_2d = out.permute(0, 2, 3, 1).view(-1, p), h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
        if inplace:
            acc.addmm_(h_2d, w.t())
            return out
        return torch.addmm(acc, h_2d, w.t()).view(b, hh, ww, p).permute(0, 3, 1, 2)
    return None


def block_shortcut(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x if block.downsample is None else block.downsample(x)


def block_act(block: nn.Module) -> nn.Module:
    return block.act3 if isinstance(block, Bottleneck) else block.act2


def block_output(block: nn.Module, x: torch.Tensor, out: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    """`act(out + shortcut(x))`, the block's output from its residual-branch output `out`."""
    shortcut = block_shortcut(block, x)
    if symbolic(out):  # torch.fx tracing: out of place, whatever the grad mode the graph was traced in
        return block_act(block)(out + shortcut)
    if u is None or not torch.is_grad_enabled():
        out += shortcut  # as timm's blocks do; with autograd on, `out` is saved by the projection u
    else:
        out = out + shortcut
    return block_act(block)(out)


def symbolic(t) -> bool:
    """Is `t` a `torch.fx` Proxy, i.e. is the model being symbolically traced? Code that branches on a tensor's
    layout or on the grad mode takes one fixed path then: a traced graph cannot branch when it runs."""
    return isinstance(t, torch.fx.Proxy)


def follow_resolution(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The state average-pooled to the features' resolution where a block halved it.

    Registered with `torch.fx.wrap` (below): under symbolic tracing the sizes are unknown, so a traced graph
    calls this function as one step and the comparison runs on the real tensors."""
    # sides compared one by one and shapes printed as lists: TorchScript compiles this function where a scripted
    # FX graph calls it, and it has no tuple() of a size
    if h.shape[-1] != x.shape[-1] or h.shape[-2] != x.shape[-2]:
        # ceil mode so that odd sizes follow the strided conv (57 -> 29)
        h = F.avg_pool2d(h, 2, 2, ceil_mode=True, count_include_pad=False)
        if h.shape[-1] != x.shape[-1] or h.shape[-2] != x.shape[-2]:
            raise RuntimeError(f"state {list(h.shape)} cannot follow features {list(x.shape)}")
    return h


# one call each in a torch.fx graph (see `_inputs.py`): both branch on sizes that tracing does not know
torch.fx.wrap("check_image_input")
torch.fx.wrap("follow_resolution")


def to_small_image_stem(model: ResNet, in_chans: int) -> None:
    """CIFAR-style stem in place: one 3×3 stride-1 conv to the first stage width, no max-pool."""
    width = model.feature_info[0]["num_chs"]
    model.conv1 = nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    # timm's make_blocks assumes a stride-4 stem; this stem has stride 1
    model.feature_info[0]["reduction"] = 1
    for info in model.feature_info[1:]:
        info["reduction"] //= 4


def small_resnet_kwargs(depth: int) -> dict:
    if depth not in SMALL_DEPTHS:
        raise ValueError(f"small-image ResNet depth must be one of {SMALL_DEPTHS}, got {depth}")
    n = (depth - 2) // 6
    # 'deep' stem of width 8 makes timm start the first stage at 16 channels; the stem itself is
    # then replaced by to_small_image_stem
    return dict(block=BasicBlock, layers=(n, n, n), channels=SMALL_CHANNELS, stem_type="deep", stem_width=8)


class StagedResNet(ResNet):
    """timm `ResNet` with any number of stages, the small-image stem option, input checks and a
    stage loop that subclasses can thread a carry (a state) through.

    timm's own `forward_features`/`forward_intermediates` hard-code four stages and no carry.
    """

    def __init__(self, *, small_image: bool = False, **kwargs):
        super().__init__(**kwargs)
        if small_image:
            to_small_image_stem(self, self.in_chans)
        self.small_image = small_image
        self.min_input_size = 8 if small_image else 32
        self.stage_names = tuple(f"layer{i + 1}" for i in range(len(self.feature_info) - 1))

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, n) for n in self.stage_names]

    def blocks(self):
        for stage in self.stages():
            yield from stage

    def stem_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem output before the max-pool (feature index 0)."""
        check_image_input(x, self.in_chans, self.min_input_size, type(self).__name__)
        return self.act1(self.bn1(self.conv1(x)))

    # -- the carry: nothing in a vanilla ResNet ---------------------------------------------
    def initial_carry(self, x: torch.Tensor):
        return None

    def run_stage(self, s: int, x: torch.Tensor, carry):
        stage = self.stages()[s]
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return checkpoint_seq(stage, x), carry
        return stage(x), carry

    def finish_features(self, x: torch.Tensor, carry) -> torch.Tensor:
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.stem_features(x))
        carry = self.initial_carry(x)
        for s in range(len(self.stage_names)):
            x, carry = self.run_stage(s, x, carry)
        return self.finish_features(x, carry)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices=None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """timm's feature API: stem output (index 0) and the stage outputs (1..)."""
        if output_fmt != "NCHW":
            raise ValueError(f"only NCHW intermediates are supported, got {output_fmt!r}")
        take, max_index = feature_indices(len(self.stage_names) + 1, indices)
        x = self.stem_features(x)
        intermediates = [x] if 0 in take else []
        x = self.maxpool(x)
        carry = self.initial_carry(x)
        for s in range(max_index if stop_early else len(self.stage_names)):
            x, carry = self.run_stage(s, x, carry)
            if s + 1 in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return self.finish_features(x, carry), intermediates

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        take, max_index = feature_indices(len(self.stage_names) + 1, indices)
        for n in self.stage_names[max_index:]:
            setattr(self, n, nn.Sequential())
        if max_index == 0:
            self.maxpool = nn.Identity()
        pruned_end = max_index < len(self.stage_names)
        if pruned_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or pruned_end:
            self.reset_classifier(0, "")
        return take


class StatefulResNet(StagedResNet):
    """A timm ResNet whose blocks also read a state `h` (concatenated to their input) that is
    updated from each block's residual-branch output.

    Args:
        state_chs: channels of `h`, added to every block's first conv.
        small_image: CIFAR-style stem (3×3 conv, no max-pool) for 28–32 px images.
        head_concat: RLA-style head, `fc(GAP(cat[X^T, ReLU(BN(h^T))]))`.
        **kwargs: timm `ResNet` arguments (block, layers, num_classes, in_chans, drop_path_rate, ...).
    """

    def __init__(self, *, state_chs: int, small_image: bool = False, head_concat: bool = False, **kwargs):
        super().__init__(small_image=small_image, **kwargs)
        self.state_chs = state_chs
        self.head_concat = head_concat
        for block in self.blocks():
            widen_input(block.conv1, state_chs)
        if head_concat:
            self.head_norm = nn.BatchNorm2d(state_chs)
            self.num_features = self.head_hidden_size = self.num_features + state_chs
            self.reset_classifier(self.num_classes)

    # -- what subclasses define ------------------------------------------------------------
    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state_input(
        self, out: torch.Tensor, stage: int, block: nn.Module, hidden: torch.Tensor
    ) -> torch.Tensor | None:
        """What the update after `block` reads from its residual-branch output `out`: a new tensor
        (a projection of `out`), or None when this block does not update the state. `hidden` is the
        input of the branch's last conv (from which an inference-time fold can compute the same
        projection more cheaply). Called before the shortcut is added, so that the add can reuse
        `out`'s memory when no gradient is kept."""
        raise NotImplementedError

    def update_state(self, h: torch.Tensor, u: torch.Tensor | None, stage: int, index: int, block: nn.Module):
        """The state after `block` (index `index` of stage `stage`), given `u = state_input(...)`."""
        raise NotImplementedError

    # -- the depth recurrence --------------------------------------------------------------
    def block_step(self, block, x, h, stage: int, index: int):
        out, hidden = residual_branch(block, x, h, return_hidden=True)
        u = self.state_input(out, stage, block, hidden)
        x = block_output(block, x, out, u)
        h = self.update_state(follow_resolution(h, x), u, stage, index, block)
        return x, h

    def initial_carry(self, x: torch.Tensor) -> torch.Tensor:
        h = self.initial_state(x)
        if symbolic(x):
            return h
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # a channels_last model gets a channels_last state: the update's element-wise ops then read `u`
            # and `h` in one layout, and the widened conv's h-part GEMM reads `h` without a copy
            h = h.contiguous(memory_format=torch.channels_last)
        return h

    def run_stage(self, s: int, x, h):
        for j, block in enumerate(self.stages()[s]):
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                x, h = checkpoint(self.block_step, block, x, h, s, j, use_reentrant=False)
            else:
                x, h = self.block_step(block, x, h, s, j)
        return x, h

    def finish_features(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.head_concat:
            x = torch.cat([x, F.relu(self.head_norm(h.to(x.dtype)))], dim=1)
        return x

    def forward_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final features (before any head concat) and final state."""
        x = self.maxpool(self.stem_features(x))
        h = self.initial_carry(x)
        for s in range(len(self.stage_names)):
            x, h = self.run_stage(s, x, h)
        return x, h

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        take = super().prune_intermediate_layers(indices, prune_norm, prune_head)
        if len(self.stages()[-1]) == 0:
            self.head_concat = False  # the final state no longer reaches a head
        return take

    # -- warm start from a vanilla timm ResNet ----------------------------------------------
    def load_vanilla_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True):
        """Load a vanilla timm ResNet checkpoint of the same depth.

        The first conv of every block gets the vanilla weights in its first `C_in` input slots
        and zeros in the `state_chs` new ones, so the model's features equal the vanilla model's
        until the new slots learn. The fc is widened the same way when `head_concat` is on.
        Parameters that the vanilla model lacks keep their own init. Returns the missing keys.
        """
        def widen(key, old, target):
            if not widened_by_state(key, old, target, self.state_chs, self.head_concat):
                return None
            w = torch.zeros_like(target)
            w[:, : old.shape[1]] = old
            return w

        return load_into_larger_model(self, state_dict, strict, adapt=widen)


def widened_by_state(key: str, old: torch.Tensor, new: torch.Tensor, state_chs: int, head_concat: bool) -> bool:
    """Is `new` the vanilla tensor `old` with `state_chs` more inputs (a block's conv1, or the fc
    of a head that also reads the state)?"""
    if old.ndim != new.ndim or old.shape[0] != new.shape[0] or old.shape[2:] != new.shape[2:]:
        return False
    is_widened = key.endswith("conv1.weight") or (key == "fc.weight" and head_concat)
    return is_widened and old.shape[1] + state_chs == new.shape[1]


def widen_input(conv: nn.Conv2d, extra: int) -> None:
    """Add `extra` input channels to a conv in place (kaiming fan-out init, as timm's ResNet)."""
    w = torch.empty(conv.out_channels, conv.in_channels + extra, *conv.kernel_size, dtype=conv.weight.dtype)
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    conv.weight = nn.Parameter(w)
    conv.in_channels += extra
