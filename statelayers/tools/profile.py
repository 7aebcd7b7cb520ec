"""Parameter and MAC counts of a model, and the paper's reported counts to compare them with.

Conventions
-----------
* **Parameters** are ``sum(p.numel() for p in model.parameters())``: every parameter tensor,
  including bare ``nn.Parameter`` s such as S6LA's ``h0`` and ``A_log``. (The RLA/MRLA repos
  count with thop, which skips bare parameters, so their numbers can be lower.)
* **MACs** (multiply–accumulates) of one forward pass at batch 1, in eval mode, counted with
  torch's own :class:`torch.utils.flop_counter.FlopCounterMode`. That counter reports FLOPs as
  2 × MACs for matmul / linear / convolution / attention (``2·M·N·K`` for a matmul), so
  :func:`count_macs` returns its total divided by 2. The papers' "FLOPs" column is in fact MACs
  (ResNet-50 "4.1 B"), so GMACs here are what to compare with it. Only those ops are counted:
  bias adds, BatchNorm, activations, pooling and element-wise ops (e.g. the S6 state update
  ``exp(ΔA)·h + ΔB·u``) are free, which is why these totals sit a little below fvcore's or
  thop's (design note s6la.md §6).
* **Bytes** (:func:`count_bytes`): the memory traffic of one grad-free forward, op by op, which
  is what the ops that MACs leave out cost (BENCHMARKS.md, "Cost of aggregation").
* **Dispatched ops** (:func:`count_step_ops`): the ops one training step dispatches, forward and
  backward, which is what a GPU pays host time for (BENCHMARKS.md, "S6LA at GPU speed").
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "PAPER_TABLES",
    "PaperRow",
    "Measured",
    "ComparisonRow",
    "count_params",
    "count_macs",
    "count_bytes",
    "count_step_ops",
    "paper_table",
    "measure",
    "compare_to_paper",
    "format_comparison",
]


# ---------------------------------------------------------------------------------------------
# counting


def count_params(model: nn.Module) -> int:
    """Number of parameter elements, ``sum(p.numel())`` (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters())


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _addmm_inplace_flops(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    m, k = a_shape
    return 2 * m * k * b_shape[1]


def _baddbmm_inplace_flops(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    b, m, k = a_shape
    return 2 * b * m * k * b_shape[2]


def _custom_flop_mapping() -> dict:
    # FlopCounterMode registers the CUDA fused-attention kernels but not the CPU one that
    # F.scaled_dot_product_attention dispatches to here; without this, timm's fused attention
    # (ViT, Swin, ...) would count as zero. Nor does it register the in-place addmm_/baddbmm_
    # that a grad-free S6LA-ResNet forward accumulates its widened conv with (conv_on_concat).
    mapping = {
        torch.ops.aten.addmm_: _addmm_inplace_flops,
        torch.ops.aten.baddbmm_: _baddbmm_inplace_flops,
    }
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _sdpa_cpu_flops
    return mapping


def _as_input_shape(input_size: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_size)
    if not shape or min(shape) < 1:
        raise ValueError(f"input_size must be a non-empty shape without the batch dim, got {tuple(input_size)}")
    return (1, *shape)


def _total_flops(model: nn.Module, shape: tuple[int, ...], fake: bool) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    def run() -> int:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_custom_flop_mapping()) as counter:
            model(torch.zeros(shape))
        return counter.get_total_flops()

    return _maybe_fake(run, fake)


def _maybe_fake(run, fake: bool):
    """`run()`, on fake tensors when `fake`.

    Shapes are all the counters need, so the forward can run on fake tensors (no arithmetic is
    done; 2-4x faster on CPU for the ResNets). Tensors keep their device type, unlike "meta",
    so code such as `torch.autocast(device_type=x.device.type)` still runs. A model whose
    forward depends on values (`.item()`, data-dependent shapes) falls back to a real forward."""
    if not fake:
        return run()
    from torch._subclasses.fake_tensor import FakeTensorMode

    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            return run()
    except Exception:
        return run()


def count_macs(model: nn.Module, input_size: Sequence[int], fake: bool = False) -> int:
    """Multiply–accumulates of one eval-mode forward pass on a batch of one.

    ``input_size`` is the shape of one sample, without the batch dim: ``(C, H, W)`` for an image
    model (the forward gets ``torch.zeros(1, *input_size)``). The count comes from
    :class:`torch.utils.flop_counter.FlopCounterMode`, which reports FLOPs = 2 × MACs for
    matmul / linear / convolution / attention; the value returned is that total divided by 2.
    Bias adds, normalisation, activations, pooling and element-wise ops are not counted.
    ``fake=True`` runs the forward on fake tensors (shapes only, same count, 2-4x faster); it
    falls back to a real forward if the model needs real values. Use it only on a throwaway
    model: a module that caches tensors during forward would keep fake ones. The model's
    train/eval mode is restored afterwards.
    """
    shape = _as_input_shape(input_size)
    was_training = model.training
    model.eval()
    try:
        flops = _total_flops(model, shape, fake)
    finally:
        model.train(was_training)
    return flops // 2


def _distinct_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements of `t`: a broadcast (stride-0) dim is read once."""
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n * t.element_size()


_WRITE_ONLY_SELF = {"copy_", "fill_", "zero_"}  # in-place ops that overwrite `self` without reading it


class _ByteCounter(TorchDispatchMode):
    """Sums, over the aten ops of a forward, the bytes each op reads and writes (see count_bytes)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        schema = func._schema
        name = func.overloadpacket.__name__
        if name.startswith("empty") or any(r.alias_info is not None and not r.alias_info.is_write
                                           for r in schema.returns):
            return out  # an allocation or a view: nothing is read or written
        results = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if not results and not any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
            return out  # metadata (a fake tensor's `device`, sizes): no tensor data is touched
        moved = 0
        for i, arg in enumerate(schema.arguments):
            value = args[i] if i < len(args) else kwargs.get(arg.name)
            writes = arg.alias_info is not None and arg.alias_info.is_write
            if writes and (arg.kwarg_only or name in _WRITE_ONLY_SELF):
                continue  # `out=` and overwritten destinations are counted with the outputs
            moved += sum(_distinct_bytes(t) for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor))
        moved += sum(_distinct_bytes(t) for t in results)
        self.total += moved
        return out


def count_bytes(model: nn.Module, input_size: Sequence[int], batch_size: int = 1, fake: bool = False) -> int:
    """Bytes read and written by one eval-mode, grad-free forward pass of a batch, op by op.

    A memory-traffic model to put beside :func:`count_macs`: every aten op reads all its tensor
    arguments (weights included, at every call) and writes its outputs, as if nothing stayed in
    cache between ops. In-place ops read and write their target; ``out=`` arguments and the
    destination of ``copy_``/``fill_``/``zero_`` are only written; views and allocations move
    nothing; a broadcast tensor counts its distinct elements once. When a model costs more time
    than its MAC ratio to another model predicts, a higher bytes ratio points at the reason: the
    added work is memory traffic (element-wise ops, narrow convs), which runs below the machine's
    GEMM speed. It is an upper reference, not a time prediction: caches and streaming help.
    ``fake`` and the input are as in :func:`count_macs`, with ``batch_size`` samples (the weights
    are read once per call, so the ratio between two models depends on the batch).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    shape = (batch_size, *_as_input_shape(input_size)[1:])
    was_training = model.training
    model.eval()

    def run() -> int:
        x = torch.zeros(shape)  # made outside the counter: writing the input is not the model's traffic
        with torch.no_grad(), _ByteCounter() as counter:
            model(x)
        return counter.total

    try:
        return _maybe_fake(run, fake)
    finally:
        model.train(was_training)


class _OpCounter(TorchDispatchMode):
    """Counts the ops dispatched below autograd, by name. Ops that an op runs internally (a custom op's own
    kernels) are not seen: the mode is off while it handles an op."""

    def __init__(self):
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def count_step_ops(model: nn.Module, x: torch.Tensor, dtype: torch.dtype | None = torch.bfloat16) -> Counter[str]:
    """Ops dispatched by one training step's forward and backward (autocast to `dtype`; None for none), by op.

    On a GPU every eager op costs host time (a few µs of dispatch and launch) whatever its size, so for small and
    medium batches this count, not the MACs, sets the step time of a model made of many small ops. The counted
    step is the second: the first creates the parameters' `.grad` tensors, after which every step also adds into
    them (one op per parameter), as an optimizer's steps do. The model is left in train mode with gradients set.
    """
    model.train()

    def step():
        with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(x).float().mean()
        loss.backward()

    step()
    with _OpCounter() as counter:
        step()
    return counter.ops


# ---------------------------------------------------------------------------------------------
# paper values


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: ``params_m`` in millions, ``flops_g`` in billions (= GMACs)."""

    backbone: str  # e.g. "ResNet-50"
    method: str  # e.g. "S6LA"
    model: str  # timm model name that builds it
    params_m: float
    flops_g: float
    source: str


_T1 = "paper Table 1 (From Layers to States, arXiv:2502.10463)"

# paper Table 1 (ImageNet-1K, 224x224): Params (M) and FLOPs (B) as printed. The table's other rows
# (SE, CBAM, A2, AA, NL, GC, ECA) are not reproduced here: timm has no exact match for most of them.
PAPER_TABLES: dict[str, tuple[PaperRow, ...]] = {
    "resnet": (
        PaperRow("ResNet-50", "Vanilla", "resnet50", 25.6, 4.1, _T1),
        PaperRow("ResNet-50", "RLA", "rla_resnet50", 25.9, 4.3, _T1),
        PaperRow("ResNet-50", "MRLA", "mrla_resnet50", 25.7, 4.6, _T1),
        PaperRow("ResNet-50", "S6LA", "s6la_resnet50", 25.8, 4.4, _T1),
        PaperRow("ResNet-101", "Vanilla", "resnet101", 44.5, 7.8, _T1),
        PaperRow("ResNet-101", "RLA", "rla_resnet101", 45.0, 8.2, _T1),
        PaperRow("ResNet-101", "MRLA", "mrla_resnet101", 44.9, 8.5, _T1),
        PaperRow("ResNet-101", "S6LA", "s6la_resnet101", 45.0, 8.3, _T1),
        PaperRow("ResNet-152", "Vanilla", "resnet152", 60.2, 11.6, _T1),
        PaperRow("ResNet-152", "RLA", "rla_resnet152", 60.8, 12.1, _T1),
        PaperRow("ResNet-152", "MRLA", "mrla_resnet152", 60.7, 12.4, _T1),
        PaperRow("ResNet-152", "S6LA", "s6la_resnet152", 60.8, 12.2, _T1),
    ),
}


_T2 = "paper Table 2 (From Layers to States, arXiv:2502.10463)"

# paper Table 2 (ImageNet-1K, 224x224). The MRLA rows of Swin and PVTv2 have no official
# MRLA-light code for those backbones and are left out. The paper's transformer rows mix counting
# conventions (design note s6la.md §7.3-7.4), so several S6LA rows cannot be matched by any one design.
PAPER_TABLES["transformers"] = (
    PaperRow("DeiT-Ti", "Vanilla", "deit_tiny_patch16_224", 5.7, 1.2, _T2),
    PaperRow("DeiT-Ti", "MRLA", "mrla_deit_tiny_patch16_224", 5.7, 1.4, _T2),
    PaperRow("DeiT-Ti", "S6LA", "s6la_deit_tiny_patch16_224", 6.1, 1.5, _T2),
    PaperRow("DeiT-S", "Vanilla", "deit_small_patch16_224", 22.1, 4.5, _T2),
    PaperRow("DeiT-S", "MRLA", "mrla_deit_small_patch16_224", 22.1, 4.6, _T2),
    PaperRow("DeiT-S", "S6LA", "s6la_deit_small_patch16_224", 23.3, 4.8, _T2),
    PaperRow("DeiT-B", "Vanilla", "deit_base_patch16_224", 86.4, 16.8, _T2),
    PaperRow("DeiT-B", "MRLA", "mrla_deit_base_patch16_224", 86.5, 16.9, _T2),
    PaperRow("DeiT-B", "S6LA", "s6la_deit_base_patch16_224", 86.9, 17.1, _T2),
    PaperRow("Swin-T", "Vanilla", "swin_tiny_patch4_window7_224", 28.3, 4.5, _T2),
    PaperRow("Swin-T", "S6LA", "s6la_swin_tiny_patch4_window7_224", 30.5, 4.5, _T2),
    PaperRow("Swin-S", "Vanilla", "swin_small_patch4_window7_224", 49.6, 8.7, _T2),
    PaperRow("Swin-S", "S6LA", "s6la_swin_small_patch4_window7_224", 52.5, 8.7, _T2),
    PaperRow("Swin-B", "Vanilla", "swin_base_patch4_window7_224", 87.8, 15.4, _T2),
    PaperRow("Swin-B", "S6LA", "s6la_swin_base_patch4_window7_224", 91.3, 15.5, _T2),
    PaperRow("PVTv2-B0", "Vanilla", "pvt_v2_b0", 3.4, 0.6, _T2),
    PaperRow("PVTv2-B0", "S6LA", "s6la_pvt_v2_b0", 3.8, 0.6, _T2),
    PaperRow("PVTv2-B1", "Vanilla", "pvt_v2_b1", 13.1, 2.3, _T2),
    PaperRow("PVTv2-B1", "S6LA", "s6la_pvt_v2_b1", 14.5, 2.2, _T2),
    PaperRow("PVTv2-B2", "Vanilla", "pvt_v2_b2", 25.4, 4.0, _T2),
    PaperRow("PVTv2-B2", "S6LA", "s6la_pvt_v2_b2", 26.1, 4.1, _T2),
)


def paper_table(name: str) -> tuple[PaperRow, ...]:
    """The rows of the paper table ``name`` (see :data:`PAPER_TABLES`)."""
    try:
        return PAPER_TABLES[name]
    except KeyError:
        raise KeyError(f"unknown paper table {name!r}; available: {', '.join(sorted(PAPER_TABLES))}") from None


# ---------------------------------------------------------------------------------------------
# measuring timm models


@dataclass(frozen=True)
class Measured:
    model: str
    params: int
    macs: int
    input_size: tuple[int, int, int]
    num_classes: int


def measure(
    model_name: str,
    img_size: int | None = None,
    in_chans: int | None = None,
    num_classes: int | None = None,
    fake: bool = True,
) -> Measured:
    """Build the timm model ``model_name`` (random init) and count its params and MACs.

    Defaults for the image size and channels come from the model's ``pretrained_cfg['input_size']``;
    ``in_chans`` / ``num_classes`` are passed to ``timm.create_model`` only when given. Raises
    ``RuntimeError`` (from timm) for an unknown name; check with ``timm.is_model`` first.
    """
    import timm

    import statelayers.models  # noqa: F401  (registers the models with timm)

    kwargs: dict = {}
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if img_size is not None:
        cfg = timm.models.get_pretrained_cfg(model_name)
        if cfg is not None and cfg.fixed_input_size:  # e.g. ViT: position embeddings depend on it
            kwargs["img_size"] = img_size
    model = timm.create_model(model_name, pretrained=False, **kwargs)
    cfg_c, cfg_h, cfg_w = model.pretrained_cfg.get("input_size", (3, 224, 224))
    input_size = (
        in_chans if in_chans is not None else cfg_c,
        img_size if img_size is not None else cfg_h,
        img_size if img_size is not None else cfg_w,
    )
    return Measured(
        model=model_name,
        params=count_params(model),
        macs=count_macs(model, input_size, fake=fake),
        input_size=input_size,
        num_classes=getattr(model, "num_classes", num_classes if num_classes is not None else -1),
    )


@dataclass(frozen=True)
class ComparisonRow:
    paper: PaperRow
    measured: Measured | None  # None: model not registered (yet)


def compare_to_paper(name: str, select: str | None = None, fake: bool = True) -> list[ComparisonRow]:
    """Measure every model of paper table ``name`` at the paper's 224x224 / 1000 classes.

    ``select`` is an optional glob on the timm model name (``"*50"``). Rows whose model is not
    registered with timm are returned with ``measured=None`` and not built.
    """
    import timm

    import statelayers.models  # noqa: F401  (registers the models with timm)

    rows = []
    for row in paper_table(name):
        if select is not None and not fnmatch.fnmatch(row.model, select):
            continue
        measured = measure(row.model, img_size=224, num_classes=1000, fake=fake) if timm.is_model(row.model) else None
        rows.append(ComparisonRow(row, measured))
    return rows


def _signed(x: float) -> str:
    s = f"{x:+.3f}"
    return "+0.000" if s == "-0.000" else s


def format_comparison(rows: Sequence[ComparisonRow]) -> str:
    """Aligned text table: paper params / FLOPs beside measured params (M) / GMACs, and the differences."""
    header = ("backbone", "method", "timm model", "paper M", "ours M", "dM", "paper G", "ours GMAC", "dG")
    lines: list[tuple[str, ...]] = [header]
    skipped = []
    for r in rows:
        p, m = r.paper, r.measured
        if m is None:
            skipped.append(p.model)
            ours_p = ours_g = d_p = d_g = "-"
        else:
            mp, mg = m.params / 1e6, m.macs / 1e9
            ours_p, ours_g = f"{mp:.3f}", f"{mg:.3f}"
            d_p, d_g = _signed(mp - p.params_m), _signed(mg - p.flops_g)
        lines.append((p.backbone, p.method, p.model, f"{p.params_m:.1f}", ours_p, d_p, f"{p.flops_g:.1f}", ours_g, d_g))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    left = 3  # first three columns are text, the rest numbers

    def fmt(line: tuple[str, ...]) -> str:
        cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
        return "  ".join(cells).rstrip()

    out = [fmt(lines[0]), "  ".join("-" * w for w in widths)]
    out += [fmt(line) for line in lines[1:]]
    sources = sorted({r.paper.source for r in rows})
    out.append("")
    out.append(f"paper: {'; '.join(sources)}; Params (M) and FLOPs (B) as printed, the FLOPs being MACs.")
    out.append("ours: params = numel; GMACs = torch FlopCounterMode FLOPs / 2 (conv/linear/matmul only); 1x3x224x224.")
    if skipped:
        out.append(f"not registered (skipped): {', '.join(skipped)}")
    return "\n".join(out)


def cpu_model() -> str:
    """The CPU's model name (for the machine description that goes with every measurement)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
