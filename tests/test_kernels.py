"""The fused S6LA path (statelayers/kernels) against the torch reference: kernels, models, op budget, compile.

The Triton kernels run on CPU in Triton's interpreter (TRITON_INTERPRET=1, set in conftest.py). Kernel tests compare
against the reference evaluated in float64 on the same (rounded) inputs, with bounds from float32 rounding: a sum of
k terms computed in float32 is off by at most about k·ε₃₂ of the sum of their magnitudes, so each check allows
8·k·ε₃₂ of the reference's largest magnitude (k the longest reduction behind the value), plus the output's own
rounding (a bfloat16 ulp, 2⁻⁷ relative). Model tests check that the fused path is as accurate as the reference path:
both in float32 against the reference in float64.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from script_helpers import one_thread_env
from timm.models.resnet import Bottleneck

from statelayers import S6LAResNet
from statelayers.layers.kernels import fused_path, s6la_ops, use_kernels
from statelayers.layers.selective import SelectiveParams, conv_state_update, token_state_update

pytest.importorskip("triton")

EPS32 = torch.finfo(torch.float32).eps
# one bfloat16 ulp, relative: Triton's interpreter converts float32 to bfloat16 by truncation (GPUs round to nearest,
# half this), so an output in bfloat16 may be off by a whole ulp
BF16_ROUND = 2.0**-7


def kernels():
    from statelayers.layers.kernels import s6la_triton

    return s6la_triton


def assert_bounded(actual, expected, terms: int, out_round: float = 0.0, what: str = ""):
    """|actual - expected| <= (8·terms·ε₃₂ + out_round) · max|expected|, element-wise."""
    expected = expected.double()
    scale = expected.abs().max().item()
    err = (actual.double() - expected).abs().max().item()
    bound = (8 * terms * EPS32 + out_round) * scale + 1e-30
    assert err <= bound, f"{what}: max error {err:.3g} > bound {bound:.3g} (scale {scale:.3g})"


def jitter(module: torch.nn.Module, scale: float = 0.1) -> None:
    """Move every parameter off its init (A_log, biases), so that each one matters in the comparison."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def grads_of(loss, tensors):
    gs = torch.autograd.grad(loss, tensors, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(gs, tensors)]


# ----------------------------------------------------------------------------------------- CNN update kernel

CASES = [dict(selective=s, rms=r, drop=d) for s in (True, False) for r in (True, False) for d in (False, True)]


def _conv_case(case, dtype, channels_last, bsz=3, n=5, hh=7, ww=9, expand_h=False):
    torch.manual_seed(0)
    step64 = SelectiveParams(n, n, n, selective=case["selective"], dt_min=1e-2, dt_max=1.0).double()
    jitter(step64)
    u = (2 * torch.randn(bsz, n, hh, ww)).to(dtype)  # rounded to `dtype` first: both sides read these values
    if channels_last:
        u = u.contiguous(memory_format=torch.channels_last)
    h = torch.randn(1 if expand_h else bsz, n, hh, ww).expand(bsz, -1, -1, -1) if expand_h \
        else torch.randn(bsz, n, hh, ww)
    g_h = torch.randn(bsz, n, hh, ww, dtype=torch.float64)
    g_c = torch.randn(bsz, n, hh, ww).to(dtype).double()  # the gradient of a `dtype` output arrives in `dtype`

    u64, h64 = u.double().requires_grad_(), h.double().requires_grad_()
    terms = conv_state_update(step64, h64, u64, case["rms"])
    ref = terms.decay if case["drop"] else terms.h
    ref_grads = grads_of((ref * (g_h + g_c)).sum(), [u64, h64, *step64.parameters()])

    step = SelectiveParams(n, n, n, selective=case["selective"])
    step.load_state_dict({k: v.float() for k, v in step64.state_dict().items()})
    u32, h32 = u.detach().requires_grad_(), h.detach().requires_grad_()
    out, out_c = s6la_ops.conv_update(step, h32, u32, case["rms"], case["drop"])
    grads = grads_of((out * g_h.float()).sum() + (out_c.float() * g_c.float()).sum(), [u32, h32, *step.parameters()])
    return out, out_c, grads, ref, ref_grads, u


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(k for k, v in c.items() if v) or "plain")
def test_conv_update_kernel_matches_float64_reference(case):
    p, n = 7 * 9, 5
    out, out_c, grads, ref, ref_grads, _ = _conv_case(case, torch.float32, channels_last=False)
    assert out.dtype == torch.float32 and out_c.dtype == torch.float32
    assert_bounded(out, ref, p, what="h")
    assert_bounded(out_c, ref, p, what="h copy")
    names = ["u", "h"] + [name for name, _ in SelectiveParams(n, n, n, selective=case["selective"]).named_parameters()]
    for name, g, r in zip(names, grads, ref_grads):
        # ∂u, ∂z and the parameter gradients chain a pixel sum, N-term products and a batch sum
        assert_bounded(g, r, 3 * p + 4 * n, what=f"grad {name}")


@pytest.mark.parametrize("case", [CASES[0], CASES[4]], ids=["selective", "constant"])
def test_conv_update_kernel_bf16_channels_last(case):
    p, n = 7 * 9, 5
    out, out_c, grads, ref, ref_grads, u = _conv_case(case, torch.bfloat16, channels_last=True)
    assert out.dtype == torch.float32 and out_c.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last) and out_c.is_contiguous(
        memory_format=torch.channels_last)
    assert_bounded(out, ref, p, what="h")
    assert_bounded(out_c, ref, p, BF16_ROUND, what="bf16 copy")
    assert grads[0].dtype == torch.bfloat16 and grads[0].is_contiguous(memory_format=torch.channels_last)
    assert_bounded(grads[0], ref_grads[0], 3 * p + 4 * n, BF16_ROUND, what="grad u")
    for g, r in zip(grads[1:], ref_grads[1:]):
        assert_bounded(g, r, 3 * p + 4 * n)


def test_conv_update_kernel_split_over_programs_and_tiles(monkeypatch):
    """Several programs per sample and several tiles per program (the GPU launch shape) give the same result."""
    monkeypatch.setattr(kernels(), "TARGET_PROGRAMS", 64)
    monkeypatch.setattr(kernels(), "MAX_TILE", 64)  # 8 × 16 tiles: 4 tiles per sample of 7 × 9 pixels
    assert kernels()._pixel_split(3, 63, 16) == (4, 16)
    p, n = 7 * 9, 5
    out, out_c, grads, ref, ref_grads, _ = _conv_case(CASES[0], torch.float32, channels_last=True, expand_h=True)
    assert_bounded(out, ref, p)
    for g, r in zip(grads, ref_grads):
        assert_bounded(g, r, 3 * p + 4 * n)


def test_conv_update_kernel_single_pixel_and_odd_shapes():
    for shape in [(1, 3, 1, 1), (2, 33, 3, 1), (1, 1, 1, 17)]:
        bsz, n, hh, ww = shape
        out, _, grads, ref, ref_grads, _ = _conv_case(CASES[0], torch.float32, False, bsz, n, hh, ww)
        assert_bounded(out, ref, hh * ww, what=str(shape))
        for g, r in zip(grads, ref_grads):
            assert_bounded(g, r, 3 * hh * ww + 4 * n, what=str(shape))


# --------------------------------------------------------------------------------------- token update kernel


def _token_case(case, dtype, bsz=3, d=37, n=5, expand_h=True):
    torch.manual_seed(0)
    r = math.ceil(d / 8)
    kw = dict(a_shape=(d, n), dt_rank=r, selective=case["selective"])
    step64 = SelectiveParams(d, d, n, **kw).double()
    jitter(step64)
    x = (2 * torch.randn(bsz, 4, d)).to(dtype)  # the summary is a strided view of the tokens, as x[:, 0]
    h = torch.randn(1, d, n).expand(bsz, -1, -1) if expand_h else torch.randn(bsz, d, n)
    g_h = torch.randn(bsz, d, n, dtype=torch.float64)
    g_c = torch.randn(bsz, d, n).to(dtype).double()  # the gradient of a `dtype` output arrives in `dtype`

    x64, h64 = x.double().requires_grad_(), h.double().requires_grad_()
    terms = token_state_update(step64, h64, x64[:, 0], case["rms"])
    ref = terms.decay if case["drop"] else terms.h
    ref_grads = grads_of((ref * (g_h + g_c)).sum(), [x64, h64, *step64.parameters()])

    step = SelectiveParams(d, d, n, **kw)
    step.load_state_dict({k: v.float() for k, v in step64.state_dict().items()})
    x32, h32 = x.detach().requires_grad_(), h.detach().requires_grad_()
    out, out_c = s6la_ops.token_update(step, h32, x32[:, 0], case["rms"], case["drop"])
    grads = grads_of((out * g_h.float()).sum() + (out_c.float() * g_c.float()).sum(), [x32, h32, *step.parameters()])
    return out, out_c, grads, ref, ref_grads


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(k for k, v in c.items() if v) or "plain")
def test_token_update_kernel_matches_float64_reference(case):
    d, n = 37, 5
    out, out_c, grads, ref, ref_grads = _token_case(case, torch.float32)
    assert_bounded(out, ref, d, what="h")
    assert_bounded(out_c, ref, d, what="h copy")
    for g, r in zip(grads, ref_grads):
        assert_bounded(g, r, 4 * d + 2 * n)


def test_token_update_kernel_bf16_wide_and_tiled(monkeypatch):
    """DeiT-Ti's sizes (D = 192, N = 32, r = 24) with bf16 tokens, and the same with small tiles (several D chunks
    per program and per parameter-gradient program)."""
    d, n = 192, 32
    for max_tile in (None, 512):
        if max_tile:
            monkeypatch.setattr(kernels(), "MAX_TILE", max_tile)
        out, out_c, grads, ref, ref_grads = _token_case(CASES[0], torch.bfloat16, bsz=5, d=d, n=n, expand_h=False)
        assert out_c.dtype == torch.bfloat16
        assert_bounded(out, ref, d)
        assert_bounded(out_c, ref, d, BF16_ROUND)
        assert_bounded(grads[0], ref_grads[0], 4 * d + 2 * n, BF16_ROUND, what="grad tokens")
        for g, r in zip(grads[1:], ref_grads[1:]):
            assert_bounded(g, r, 4 * d + 2 * n)


# ------------------------------------------------------------------------------------------------ token read


@pytest.mark.parametrize("n_prefix", [0, 1, 2])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_token_read_matches_reference(n_prefix, autocast):
    """The read-out op equals the reference module code: `cat([prefix, T + bmm(W_C T, hᵀ)])`, with the GEMMs in
    the autocast dtype and the sum in the tokens' dtype, values and gradients."""
    torch.manual_seed(0)
    from statelayers.models._token_state import TokenStateUnit

    unit = TokenStateUnit(24, 8)
    x = torch.randn(3, 7, 24, requires_grad=True)
    h = torch.randn(3, 24, 8, requires_grad=True)
    g = torch.randn(3, 7, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        ref = torch.cat([x[:, :n_prefix], unit.read(x[:, n_prefix:], h)], dim=1)
        h_c = h.to(s6la_ops.compute_dtype(x))
        out = s6la_ops.token_read(x, h_c, unit.wC.weight, n_prefix)
    assert out.dtype == ref.dtype == torch.float32
    ref_grads = grads_of((ref * g).sum(), [x, h, unit.wC.weight])
    grads = grads_of((out * g).sum(), [x, h, unit.wC.weight])
    if autocast:  # both round the same products to bf16; GEMM summation order may differ
        torch.testing.assert_close(out, ref, rtol=0, atol=4 * BF16_ROUND * ref.abs().max().item())
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, rtol=0, atol=4 * BF16_ROUND * b.abs().max().item())
    else:
        assert_bounded(out, ref, 24 + 8)
        for a, b in zip(grads, ref_grads):
            assert_bounded(a, b, 3 * 24 + 7 * 3)
    assert torch.equal(out[:, :n_prefix], x[:, :n_prefix].detach())


# ------------------------------------------------------------------------------------ models: fused vs torch


MODELS = [
    ("s6la_cifar_resnet20", dict(), (2, 1, 28, 28)),
    ("s6la_resnet50", dict(), (2, 3, 32, 32)),
    ("s6la_resnet50", dict(head_concat=True, u_norm="none"), (2, 3, 33, 41)),
    ("s6la_resnet18", dict(selective=False, h0="zeros"), (2, 3, 33, 33)),
    ("s6la_deit_tiny_patch16_224", dict(img_size=48, depth=4), (2, 3, 48, 48)),
    ("s6la_deit_tiny_patch16_224", dict(img_size=32, depth=3, class_token=False, global_pool="avg",
                                        c_norm="none", selective=False), (2, 3, 32, 32)),
    ("s6la_deit_tiny_patch16_224", dict(img_size=32, depth=3, fuse="concat"), (2, 3, 32, 32)),
    ("s6la_swin_tiny_patch4_window7_224", dict(img_size=56, depths=(1, 1, 2, 1), window_size=7), (2, 3, 56, 56)),
    ("s6la_pvt_v2_b0", dict(transition="reset", depths=(1, 1, 1, 1)), (2, 3, 64, 64)),
]
MODEL_IDS = [f"{m}-{'-'.join(map(str, k.values()))}" if k else m for m, k, _ in MODELS]


def _run(name, kw, shape, dtype, mode, train=True):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5, **kw).to(dtype)
    jitter(model, 0.02)
    model.train(train)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    with use_kernels(mode):
        torch.manual_seed(3)  # the same random h0 / drop-path draws on both paths
        out = model(x)
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum()
        grads = grads_of(loss, [p for p in model.parameters() if p.requires_grad])
    return out.detach(), torch.cat([g.flatten() for g in grads])


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("name,kw,shape", MODELS, ids=MODEL_IDS)
def test_model_fused_path_as_accurate_as_reference(name, kw, shape):
    """In train mode, outputs and every parameter gradient: the fused path's float32 error against the
    reference's float64 result is within 4× the reference path's own float32 error (or 1e-6)."""
    out64, g64 = _run(name, kw, shape, torch.float64, "torch")
    out_ref, g_ref = _run(name, kw, shape, torch.float32, "torch")
    out_fused, g_fused = _run(name, kw, shape, torch.float32, "triton")
    for what, fused, ref, exact in (("output", out_fused, out_ref, out64), ("gradients", g_fused, g_ref, g64)):
        err_ref, err_fused = _rel(ref, exact), _rel(fused, exact)
        assert err_fused <= max(4 * err_ref, 1e-6), f"{what}: fused {err_fused:.3g} vs reference {err_ref:.3g}"


def test_resnet50_fused_bf16_channels_last_eval_and_fold():
    """bf16 autocast with channels_last (the GPU recipe), train and eval with the inference fold: the fused path
    keeps the layout and agrees with the reference to bf16 accuracy."""
    torch.manual_seed(0)
    model = timm.create_model("s6la_resnet50", num_classes=5).to(memory_format=torch.channels_last)
    jitter(model, 0.02)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    for train in (True, False):
        model.train(train)
        outs = {}
        for mode in ("torch", "triton"):
            with use_kernels(mode), torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
                outs[mode] = model(x).float()
        assert _rel(outs["triton"], outs["torch"]) < 16 * BF16_ROUND
    model.reparameterize()
    with use_kernels("triton"), torch.no_grad():
        folded = model(x)
    with use_kernels("torch"), torch.no_grad():
        plain = model(x)
    assert _rel(folded, plain) < 1e-4


def test_fused_path_keeps_diagnostics_and_inject_ablation():
    torch.manual_seed(0)
    for name, kw, x in [("s6la_cifar_resnet20", {}, torch.randn(2, 1, 28, 28)),
                        ("s6la_deit_tiny_patch16_224", dict(img_size=32, depth=3), torch.randn(2, 3, 32, 32))]:
        model = timm.create_model(name, **kw).eval()
        with use_kernels("torch"):
            ref_rows = model.state_diagnostics(x)
        with use_kernels("triton"):
            rows = model.state_diagnostics(x)
        assert [r["block"] for r in rows] == [r["block"] for r in ref_rows]
        for r, q in zip(rows, ref_rows):
            assert r["inject_over_decay"] == pytest.approx(q["inject_over_decay"], rel=1e-5)
        # the inject ablation (h' = exp(ΔA)·h) on the fused path equals it on the reference path
        units = [model] if name.startswith("s6la_cifar") else list(model.s6la)
        for u in units:
            setattr(u, "state_ablation" if u is model else "ablation", "inject")
        outs = {}
        for mode in ("torch", "triton"):
            with use_kernels(mode), torch.no_grad():
                outs[mode] = model(x)
        assert _rel(outs["triton"], outs["torch"]) < 1e-5


def test_kernel_mode_selection():
    x = torch.zeros(1)
    with use_kernels("torch"):
        assert not fused_path(x)
    with use_kernels("triton"):
        assert fused_path(x) and not fused_path(x.double())  # float64 models always run the reference
    with use_kernels("auto"):
        assert fused_path(x) == x.is_cuda
    with pytest.raises(ValueError, match="must be one of"):
        with use_kernels("cuda"):
            pass


def test_kernel_mode_errors_name_the_fix(monkeypatch):
    """A bad STATELAYERS_KERNELS, or the Triton path forced on CPU without the interpreter, is a ValueError (the CLI
    turns it into one line and exit status 2) that says what to do, raised when the model runs."""
    import statelayers.layers.kernels as kernels_module

    model = timm.create_model("s6la_cifar_resnet20")
    x = torch.randn(1, 1, 28, 28)
    monkeypatch.setattr(kernels_module, "_MODE", "fast")  # as read from the environment at import
    with pytest.raises(ValueError, match=r"STATELAYERS_KERNELS .*'fast'"):
        model(x)
    monkeypatch.setattr(kernels_module, "_MODE", "triton")
    monkeypatch.setattr(kernels_module, "_INTERPRET", False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        model(x)
    proc = subprocess.run([sys.executable, "-c", "import statelayers"], capture_output=True, text=True,
                          env={**one_thread_env(), "STATELAYERS_KERNELS": "fast"})
    assert proc.returncode == 0, "a bad setting must not break `import statelayers`"


# ---------------------------------------------------------------------------------------------- op budget


@pytest.mark.parametrize("vanilla,s6la,shape,budget", [
    ("resnet50", "s6la_resnet50", (2, 3, 64, 64), 1.30),
    ("deit_tiny_patch16_224", "s6la_deit_tiny_patch16_224", (2, 3, 224, 224), 1.30),
    ("cifar_resnet56", "s6la_cifar_resnet56", (2, 1, 28, 28), 1.60),
], ids=["resnet50", "deit_tiny", "cifar_resnet56"])
def test_op_budget_of_a_bf16_training_step(vanilla, s6la, shape, budget):
    """The issue's budget: ops dispatched by one bf16 training step (forward + backward), S6LA on the fused path
    over vanilla. Exact counts: the same on every machine with this torch."""
    from statelayers.tools.profile import count_step_ops

    counts = {}
    for name, mode in ((vanilla, "torch"), (s6la, "triton")):
        torch.manual_seed(0)
        with use_kernels(mode):
            counts[name] = sum(count_step_ops(timm.create_model(name), torch.randn(shape)).values())
    assert counts[s6la] / counts[vanilla] <= budget, counts


def test_count_step_ops_counts_a_known_step():
    """One linear layer, no autocast: forward t + addmm, backward mm (∂W) + sum (∂b) + t, mean/float and the
    loss's backward, and one add_ per parameter into the existing .grad."""
    from statelayers.tools.profile import count_step_ops

    ops = count_step_ops(torch.nn.Linear(3, 2), torch.randn(4, 3), dtype=None)
    assert ops["aten.addmm.default"] == 1 and ops["aten.add_.Tensor"] == 2
    assert ops["aten.mm.default"] == 1  # ∂W only: the input needs no gradient


# ------------------------------------------------------------------------------------------ compiles whole

# one model of every S6LA class and block type, and the options that change the forward's code path; every
# registered name at its default configuration is in the slow test below
COMPILE_MODELS = [
    ("s6la_cifar_resnet20", dict(), (2, 1, 28, 28)),
    ("S6LAResNet", dict(block=Bottleneck, layers=(1, 2, 1, 1)), (2, 3, 64, 64)),  # S6LA-ResNet-50's code, 5 blocks
    ("s6la_resnet18", dict(h0="random", head_concat=True, selective=False, u_norm="none"), (2, 3, 64, 64)),
    ("s6la_deit_tiny_patch16_224", dict(img_size=32, depth=3), (2, 3, 32, 32)),
    ("s6la_deit_tiny_patch16_224", dict(img_size=32, depth=3, fuse="concat", h0="zeros", class_token=False,
                                        global_pool="avg"), (2, 3, 32, 32)),
    ("s6la_swin_tiny_patch4_window7_224", dict(img_size=64, depths=(1, 1, 2, 1)), (2, 3, 64, 64)),
    ("s6la_pvt_v2_b0", dict(transition="reset", h0="random"), (2, 3, 64, 64)),
]


def _compile_step(name, kw, shape, mode, backend="eager"):
    """A training step through `torch.compile(fullgraph=True)`: raises on any graph break (an `.item()`, a
    data-dependent branch, an untraceable call)."""
    import torch._dynamo

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = (S6LAResNet(**kw) if name == "S6LAResNet" else timm.create_model(name, **kw)).train()
    x = torch.randn(shape)
    with use_kernels(mode):
        compiled = torch.compile(model, fullgraph=True, backend=backend)
        out = compiled(x)
        out.float().mean().backward()
    return model, out


@pytest.mark.parametrize("mode", ["torch", "triton"])
@pytest.mark.parametrize("name,kw,shape", COMPILE_MODELS, ids=[
    f"{m}-{'-'.join(str(v) for v in k.values() if not isinstance(v, type))}" if k else m for m, k, _ in COMPILE_MODELS])
def test_compiles_without_graph_breaks(name, kw, shape, mode):
    _compile_step(name, kw, shape, mode)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["torch", "triton"])
@pytest.mark.parametrize("name", sorted(n for n in timm.list_models("s6la_*")))
def test_every_s6la_model_compiles_without_graph_breaks(name, mode):
    small = dict(img_size=32) if "deit" in name else dict(img_size=64) if "swin" in name else {}
    shape = (2, 1, 28, 28) if "cifar" in name else (2, 3, 32 if "deit" in name else 64, 32 if "deit" in name else 64)
    _compile_step(name, small, shape, mode)


@pytest.mark.parametrize("name,kw,shape", [COMPILE_MODELS[0], COMPILE_MODELS[3]], ids=["cifar_resnet20", "deit"])
def test_fused_ops_trace_through_aot_autograd(name, kw, shape):
    """AOTAutograd (what inductor compiles) traces the custom ops' fake implementations and registered backward:
    the compiled step equals the eager one, outputs and gradients."""
    torch.manual_seed(0)
    model = timm.create_model(name, **kw).train()
    x = torch.randn(shape)
    with use_kernels("triton"):
        torch.manual_seed(1)
        eager_out = model(x)
        eager_out.sum().backward()
        eager = [p.grad for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        torch.manual_seed(1)
        out = compiled(x)
        out.sum().backward()
    torch.testing.assert_close(out, eager_out, rtol=0, atol=0)
    assert sum(g is not None for g in eager) > 0
    for p, g in zip(model.parameters(), eager):  # None for S6LA-DeiT's frozen last unit, on both
        assert (p.grad is None) == (g is None)
        if g is not None:
            torch.testing.assert_close(p.grad, g, rtol=0, atol=0)


def test_export_sees_one_op_per_update():
    torch.manual_seed(0)
    model = timm.create_model("s6la_cifar_resnet20").eval()
    x = torch.randn(2, 1, 28, 28)
    with use_kernels("triton"):
        program = torch.export.export(model, (x,))
        targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
        assert targets.count("statelayers.s6la_conv_update.default") == 8  # 9 blocks, the last one reads no state
        torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=0)


def _compile_check(*args):
    env = {k: v for k, v in one_thread_env().items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("kernel_compile_check.py")
    proc = subprocess.run([sys.executable, str(script), "--arch", "90", *args], capture_output=True, text=True,
                          env=env, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "kernel variants compiled for sm_90" in proc.stdout


def test_kernels_compile_for_h100():
    """The interpreter accepts programs Triton's compiler rejects: compile the kernel variants the wrappers launch
    (the S6LA updates, the linear scan, the S7 scan; every constexpr branch both ways, float32, bf16 and complex,
    with and without each incoming gradient) to sm_90 cubins, no GPU needed."""
    _compile_check()


@pytest.mark.slow
def test_every_kernel_variant_compiles_for_h100():
    _compile_check("--all")
