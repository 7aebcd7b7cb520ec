import pytest
import torch

from statelayers.layers import scan
from statelayers.layers.scan import linear_scan, linear_scan_reference, numba_available

# every way to run the scan: public impls, plus both torch strategies forced (the automatic choice
# depends on the size of a time step), the numba kernels with tiny blocks for the passes that walk time
# downwards (normally used only for some row sizes), and the Triton kernels (in Triton's interpreter, set by
# conftest.py) with chunks of a few steps, so that the chunk totals are carried across (on a GPU sequences of
# more than 16-256 steps take that path)
IMPLS = ["auto", "numba", "numba:blocks", "triton", "torch", "torch:loop", "torch:chunked", "reference"]


@pytest.fixture(autouse=True)
def _small_blocks(request, monkeypatch):
    if "numba:blocks" in request.node.name:
        monkeypatch.setattr(scan, "_TOUCH_ROW_BYTES", (0, 1 << 30))
        monkeypatch.setattr(scan, "_TOUCH_BLOCK_BYTES", 64)  # 1-3 time steps per block
    if "triton:chunks" in request.node.name:
        pytest.importorskip("triton")
        kernels = scan._triton()
        monkeypatch.setattr(kernels, "MIN_CHUNK", 4)
        monkeypatch.setattr(kernels, "MAX_CHUNK", 8)  # L = 29: 4 chunks, the last one partly past the end
        monkeypatch.setattr(kernels, "MAX_TILE", 16)  # 2 lanes per program: lane blocks and their masks


def run(impl, a, b, h0=None, reverse=False, lengths=None):
    if impl.startswith("numba"):
        pytest.importorskip("numba")
        impl = "numba"
    if impl.startswith("triton"):
        pytest.importorskip("triton")
        impl = "triton"
    if impl.startswith("torch:"):
        if lengths is not None:
            a, b = scan._mask_padded(a, b, lengths)
        return scan._scan(a.contiguous(), b.contiguous(), h0, reverse, impl)
    return linear_scan(a, b, h0, reverse=reverse, lengths=lengths, impl=impl)


def loop64(a, b, h0=None, reverse=False):
    """The recurrence in float64 / complex128, one step at a time, differentiable by autograd."""
    wide = torch.complex128 if a.is_complex() else torch.float64
    a, b = a.to(wide), b.to(wide)
    h = torch.zeros(a.shape[0], a.shape[2], dtype=wide) if h0 is None else h0.to(wide)
    states = {}
    for k in reversed(range(a.shape[1])) if reverse else range(a.shape[1]):
        h = a[:, k] * h + b[:, k]
        states[k] = h
    return torch.stack([states[k] for k in range(a.shape[1])], dim=1)


def random_inputs(shape, dtype, gen, with_h0=True):
    """Stable coefficients (|a| < 1), as the S7 layer produces them."""
    real = torch.float32 if dtype in (torch.float32, torch.complex64) else torch.float64
    radius = torch.rand(shape, generator=gen, dtype=real) * 0.5 + 0.49
    if dtype.is_complex:
        phase = (torch.rand(shape, generator=gen, dtype=real) - 0.5) * 6
        a = torch.polar(radius, phase)
        b = torch.complex(torch.randn(shape, generator=gen, dtype=real), torch.randn(shape, generator=gen, dtype=real))
        h0 = torch.complex(*torch.randn(2, shape[0], shape[2], generator=gen, dtype=real))
    else:
        a = radius * torch.sign(torch.rand(shape, generator=gen, dtype=real) - 0.2)
        b = torch.randn(shape, generator=gen, dtype=real)
        h0 = torch.randn(shape[0], shape[2], generator=gen, dtype=real)
    return a.to(dtype), b.to(dtype), (h0.to(dtype) if with_h0 else None)


def assert_close32(x, ref, what):
    scale = ref.abs().max().item() + 1e-12
    err = (x.to(ref.dtype) - ref).abs().max().item() / scale
    assert err < 2e-6, f"{what}: relative error {err:.2e}"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_matches_float64_loop_forward_and_gradients(impl, dtype, reverse, with_h0):
    gen = torch.Generator().manual_seed(0)
    shape = (3, 53, 5)  # L = 53: chunks of 5 steps and a 3-step remainder in the chunked path
    a, b, h0 = random_inputs(shape, dtype, gen, with_h0)
    gy = random_inputs(shape, dtype, gen)[1]
    inputs = [t.clone().requires_grad_() for t in (a, b) + ((h0,) if with_h0 else ())]
    wide = [t.detach().to(torch.complex128 if dtype.is_complex else torch.float64).requires_grad_() for t in inputs]

    y = run(impl, *inputs[:2], inputs[2] if with_h0 else None, reverse)
    ref = loop64(*wide[:2], wide[2] if with_h0 else None, reverse)
    assert y.dtype == dtype and y.shape == shape
    assert_close32(y.detach(), ref.detach(), "h")

    grads = torch.autograd.grad(y, inputs, gy)
    ref_grads = torch.autograd.grad(ref, wide, gy.to(ref.dtype))
    for name, g, r in zip(["a", "b", "h0"], grads, ref_grads):
        assert g.dtype == dtype
        assert_close32(g, r, f"grad {name}")


def _gradcheck(impl, dtype, reverse, length):
    gen = torch.Generator().manual_seed(1)
    a, b, h0 = (t.requires_grad_() for t in random_inputs((2, length, 3), dtype, gen))
    assert torch.autograd.gradcheck(lambda a, b, h0: run(impl, a, b, h0, reverse), (a, b, h0))
    # and without h0 (the zero default)
    assert torch.autograd.gradcheck(lambda a, b: run(impl, a, b, None, reverse), (a, b))


@pytest.mark.parametrize("impl", ["numba", "numba:blocks", "torch:loop", "torch:chunked"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_of_the_autograd_function(impl, dtype, reverse):
    _gradcheck(impl, dtype, reverse, length=11)  # chunked: 5 chunks of 2 steps and 1 left over


@pytest.mark.parametrize("impl", ["numba", "torch"])
def test_double_backward_raises(impl):
    a = torch.rand(2, 5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(run(impl, a, b).pow(2).sum(), a, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate"):
        g.sum().backward()


@pytest.mark.parametrize("impl", ["auto", "numba", "torch", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_long_stable_scan_stays_finite(impl, dtype):
    gen = torch.Generator().manual_seed(2)
    shape = (2, 16384, 4)
    if dtype.is_complex:
        a = torch.polar(torch.rand(shape, generator=gen), torch.rand(shape, generator=gen) * 6.3)
        b = torch.complex(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))
    else:
        a = torch.rand(shape, generator=gen) * 2 - 1
        b = torch.randn(shape, generator=gen)
    a[:, ::97] = 1.0  # some |a| = 1 steps too
    with torch.no_grad():
        y = run(impl, a, b)
    assert torch.isfinite(torch.view_as_real(y) if y.is_complex() else y).all()
    assert y.abs().max() <= b.abs().sum(1).max()  # |h_k| <= sum |b_j| when |a| <= 1


@pytest.mark.parametrize("impl", ["numba", "torch"])
@pytest.mark.parametrize("reverse", [False, True])
def test_large_buffers_match_the_reference(impl, reverse):
    # > 8 MiB outputs take the huge-page allocation path; 1.5 KiB rows the numba block path
    gen = torch.Generator().manual_seed(3)
    a, b, h0 = (t.requires_grad_() for t in random_inputs((4, 2048, 384), torch.float32, gen))
    y = run(impl, a, b, h0, reverse=reverse)
    ga, gb, gh0 = torch.autograd.grad(y.sum(), (a, b, h0))
    with torch.no_grad():
        ref = scan._torch_scan(a.detach(), b.detach(), h0.detach(), reverse, "loop")
    assert torch.allclose(y, ref, rtol=1e-5, atol=1e-5)
    if reverse:  # ∂a_k = g_k h_{k+1}, g_k = ∂b_k
        assert torch.equal(ga[:, :-1], gb[:, :-1] * y[:, 1:])
    else:  # ∂a_k = g_k h_{k-1}
        assert torch.equal(ga[:, 1:], gb[:, 1:] * y[:, :-1])
    first = -1 if reverse else 0
    assert torch.allclose(gh0, a[:, first] * gb[:, first])


@pytest.mark.parametrize("impl", IMPLS)
def test_no_grad_noncontiguous_and_short_sequences(impl):
    gen = torch.Generator().manual_seed(4)
    a, b, h0 = random_inputs((5, 6, 3), torch.complex64, gen)
    # non-contiguous views of (B, L, P): built as (P, L, B) and transposed
    at, bt = a.permute(2, 1, 0).contiguous().permute(2, 1, 0), b.permute(2, 1, 0).contiguous().permute(2, 1, 0)
    assert not at.is_contiguous()
    with torch.no_grad():
        y = run(impl, at, bt, h0[:, :])
    assert not y.requires_grad
    assert_close32(y, loop64(a, b, h0), "non-contiguous")
    for length in (1, 0):
        a1, b1 = a[:, :length].clone().requires_grad_(), b[:, :length].clone().requires_grad_()
        h1 = h0.clone().requires_grad_()
        y1 = run(impl, a1, b1, h1)
        assert y1.shape == (5, length, 3)
        if length:
            assert torch.allclose(y1[:, 0], a1[:, 0] * h1 + b1[:, 0])
        ga, gb, gh = torch.autograd.grad(y1.abs().sum(), (a1, b1, h1), allow_unused=True)
        assert ga.shape == a1.shape and gb.shape == b1.shape
        assert gh is None or gh.shape == h1.shape
        if not length:
            assert gh is None or not gh.abs().any()


@pytest.mark.parametrize("impl", ["auto", "triton", "torch", "reference"])
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_inputs_compute_and_return_float32(impl, half):
    gen = torch.Generator().manual_seed(5)
    a, b, h0 = random_inputs((2, 40, 3), torch.float32, gen)
    a, b = a.to(half).requires_grad_(), b.to(half).requires_grad_()
    y = run(impl, a, b, h0)  # h0 in the state dtype is accepted
    assert y.dtype == torch.float32
    assert_close32(y.detach(), loop64(a.detach(), b.detach(), h0), "half")
    y.sum().backward()
    assert a.grad.dtype == half and b.grad.dtype == half
    assert run(impl, a, b, h0.to(half)).dtype == torch.float32


def test_only_some_inputs_need_gradients():
    gen = torch.Generator().manual_seed(6)
    a, b, h0 = random_inputs((2, 9, 3), torch.float64, gen)
    for impl in ["numba", "torch"]:
        ar = a.clone().requires_grad_()
        (ga,) = torch.autograd.grad(run(impl, ar, b, h0).sum(), ar)
        ref = a.clone().requires_grad_()
        (gr,) = torch.autograd.grad(loop64(ref, b, h0).sum(), ref)
        assert torch.allclose(ga, gr)
        br = b.clone().requires_grad_()
        (gb,) = torch.autograd.grad(run(impl, a, br, h0).sum(), br)
        assert torch.allclose(gb, torch.autograd.grad(loop64(a, br, h0).sum(), br)[0])


def test_reference_is_the_recurrence():
    a = torch.tensor([[[0.5], [2.0], [-1.0]]])
    b = torch.tensor([[[1.0], [1.0], [3.0]]])
    assert linear_scan_reference(a, b).flatten().tolist() == [1.0, 3.0, 0.0]
    assert linear_scan_reference(a, b, reverse=True).flatten().tolist() == [4.5, 7.0, 3.0]
    assert linear_scan_reference(a, b, torch.tensor([[2.0]])).flatten().tolist() == [2.0, 5.0, -2.0]


@pytest.mark.parametrize(
    "a_shape,b_shape,dtypes,h0,match",
    [
        ((2, 3, 4), (2, 3, 5), (torch.float32, torch.float32), None, "same shape"),
        ((2, 3, 4), (2, 3, 4), (torch.float32, torch.float64), None, "same dtype"),
        ((2, 3, 4), (2, 3, 4), (torch.float32, torch.complex64), None, "same dtype"),
        ((3, 4), (3, 4), (torch.float32, torch.float32), None, "rank 3"),
        ((1, 2, 3, 4), (1, 2, 3, 4), (torch.float32, torch.float32), None, "rank 3"),
        ((2, 3, 4), (2, 3, 4), (torch.int64, torch.int64), None, "unsupported dtype"),
        ((2, 3, 4), (2, 3, 4), (torch.float32, torch.float32), torch.zeros(2, 3), "h0 must have shape"),
        ((2, 3, 4), (2, 3, 4), (torch.float32,) * 2, torch.zeros(2, 4, dtype=torch.float64), "h0 must have dtype"),
    ],
)
@pytest.mark.parametrize("impl", ["auto", "numba", "triton", "torch", "reference"])
def test_bad_arguments_raise_value_error(a_shape, b_shape, dtypes, h0, match, impl):
    a, b = torch.zeros(a_shape, dtype=dtypes[0]), torch.zeros(b_shape, dtype=dtypes[1])
    with pytest.raises(ValueError, match=match):
        linear_scan(a, b, h0, impl=impl)


def test_unknown_impl_and_device_errors():
    a = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="unknown impl"):
        linear_scan(a, a, impl="cuda")
    meta = torch.zeros(2, 3, 4, device="meta")
    with pytest.raises(ValueError, match="same device"):
        linear_scan(a, meta)
    with pytest.raises(ValueError, match="h0 must be on"):
        linear_scan(a, a, torch.zeros(2, 4, device="meta"))
    with pytest.raises(ValueError, match="CPU tensors only"):
        linear_scan(meta, meta, impl="numba")


def test_torch_path_is_device_agnostic():
    # meta tensors run every op of the torch path without data: no numpy, no CPU-only calls
    a = torch.zeros(2, 300, 4, dtype=torch.complex64, device="meta", requires_grad=True)
    h0 = torch.zeros(2, 4, dtype=torch.complex64, device="meta", requires_grad=True)
    assert scan._torch_strategy(a) == "chunked"
    for reverse in (False, True):
        y = linear_scan(a, a, h0, reverse=reverse)  # "auto" off CPU is the torch path
        assert y.device.type == "meta" and y.shape == a.shape
        ga, gh = torch.autograd.grad(y, (a, h0), torch.zeros_like(y))
        assert ga.shape == a.shape and gh.shape == h0.shape


def test_torch_strategy_follows_the_step_size():
    assert scan._torch_strategy(torch.zeros(4, 10, 64)) == "chunked"  # 1 KiB per step
    assert scan._torch_strategy(torch.zeros(32, 10, 64)) == "chunked"  # 8 KiB
    assert scan._torch_strategy(torch.zeros(16, 10, 64, dtype=torch.complex64)) == "loop"  # 8 KiB complex
    assert scan._torch_strategy(torch.zeros(64, 10, 64, dtype=torch.complex64)) == "loop"  # 32 KiB


def test_without_numba_auto_falls_back_and_numba_raises(monkeypatch):
    monkeypatch.setattr(scan, "_numba_kernels", lambda: None)
    assert not numba_available()
    gen = torch.Generator().manual_seed(7)
    a, b, h0 = random_inputs((2, 20, 3), torch.float32, gen)
    assert_close32(linear_scan(a, b, h0), loop64(a, b, h0), "auto without numba")
    with pytest.raises(ValueError, match="needs numba"):
        linear_scan(a, b, impl="numba")


def test_auto_uses_numba_on_cpu_when_available(monkeypatch):
    pytest.importorskip("numba")
    seen = []
    original = scan._numba_scan
    monkeypatch.setattr(scan, "_numba_scan", lambda *args: seen.append(1) or original(*args))
    linear_scan(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))
    assert seen


def test_triton_path_dtypes_and_device_errors(monkeypatch):
    pytest.importorskip("triton")
    import statelayers.layers.kernels as kernels

    a = torch.zeros(2, 3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="impl='triton' takes"):
        linear_scan(a, a, impl="triton")
    monkeypatch.setattr(kernels, "_INTERPRET", False)  # CPU tensors without Triton's interpreter
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        linear_scan(a.float(), a.float(), impl="triton")


def test_auto_picks_triton_for_cuda_tensors(monkeypatch):
    """The choice itself (no GPU here): CUDA tensors of the kernels' dtypes take Triton when it imports."""
    import statelayers.layers.kernels as kernels

    class FakeCuda:
        device = torch.device("cuda")
        is_cuda = True

        def __init__(self, dtype):
            self.dtype = dtype

    monkeypatch.setattr(kernels, "_TRITON", True)
    assert scan._auto_impl(FakeCuda(torch.complex64)) == "triton"
    assert scan._auto_impl(FakeCuda(torch.bfloat16)) == "triton"
    assert scan._auto_impl(FakeCuda(torch.float64)) == "torch"
    monkeypatch.setattr(kernels, "_TRITON", False)
    assert scan._auto_impl(FakeCuda(torch.complex64)) == "torch"


@pytest.mark.parametrize("case", [(torch.complex64, False, True), (torch.complex64, True, True),
                                  (torch.float32, True, False)], ids=["complex", "complex-reverse", "real-reverse"])
def test_triton_chunks_carried_across(case):
    """The multi-chunk path (on a GPU every sequence of more than 16-256 steps): chunk totals, the carry, the
    rescan, and the backward's shifted a and ∂a / ∂h0 across chunk boundaries (`triton:chunks`: 4-8 steps per
    chunk, 2 lanes per program), against the float64 loop. Triton's interpreter runs its in-chunk scans one
    element at a time: small shapes here, and the long-sequence tests of the other paths leave it out."""
    dtype, reverse, with_h0 = case
    gen = torch.Generator().manual_seed(0)
    shape = (2, 29, 3)
    a, b, h0 = random_inputs(shape, dtype, gen, with_h0)
    inputs = [t.clone().requires_grad_() for t in (a, b) + ((h0,) if with_h0 else ())]
    wide = [t.detach().to(torch.complex128 if dtype.is_complex else torch.float64).requires_grad_() for t in inputs]
    y = run("triton:chunks", *inputs[:2], inputs[2] if with_h0 else None, reverse)
    ref = loop64(*wide[:2], wide[2] if with_h0 else None, reverse)
    assert_close32(y.detach(), ref.detach(), "h")
    gy = random_inputs(shape, dtype, gen)[1]
    for name, g, r in zip(["a", "b", "h0"], torch.autograd.grad(y, inputs, gy),
                          torch.autograd.grad(ref, wide, gy.to(ref.dtype))):
        assert_close32(g, r, f"grad {name}")


def test_triton_carries_many_chunks_stably(monkeypatch, dtype=torch.complex64):
    """128 chunks of 4 steps (the GPU's largest carry), |a| <= 1 with some |a| = 1 steps: bounded, and equal to
    the float64 loop, forward and backward."""
    kernels = pytest.importorskip("statelayers.layers.kernels.scan_triton")
    monkeypatch.setattr(kernels, "MIN_CHUNK", 4)
    monkeypatch.setattr(kernels, "MAX_CHUNK", 4)
    gen = torch.Generator().manual_seed(2)
    shape = (1, 512, 1)
    a, b, _ = random_inputs(shape, dtype, gen)
    a[:, ::97] = 1.0
    a, b = a.requires_grad_(), b.requires_grad_()
    assert kernels.launch_shape(*shape, dtype.is_complex)[2] == 128
    y = linear_scan(a, b, impl="triton")
    ref = loop64(a.detach(), b.detach())
    assert_close32(y.detach(), ref, "h")
    assert y.abs().max() <= b.abs().sum(1).max()
    ga, gb = torch.autograd.grad(y.abs().sum(), (a, b))
    wa, wb = (t.detach().to(ref.dtype).requires_grad_() for t in (a, b))
    ra, rb = torch.autograd.grad(loop64(wa, wb).abs().sum(), (wa, wb))
    assert_close32(ga, ra, "grad a")
    assert_close32(gb, rb, "grad b")


@pytest.mark.parametrize("impl", IMPLS + ["triton:chunks"])
@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_make_padded_steps_the_identity(impl, reverse):
    """`lengths`: the scan equals the plain scan of a and b with a = 1, b = 0 at the padded steps (what S7 did
    before), values and gradients; the padded steps' a and b get zero gradients."""
    gen = torch.Generator().manual_seed(8)
    a, b, h0 = random_inputs((3, 21, 2), torch.complex64, gen)
    lengths = torch.tensor([21, 9, 0])
    valid = (torch.arange(21)[None, :] < lengths[:, None])[..., None]
    ins = [t.clone().requires_grad_() for t in (a, b, h0)]
    wide = [t.detach().to(torch.complex128).requires_grad_() for t in (a, b, h0)]
    y = run(impl, ins[0], ins[1], ins[2], reverse, lengths=lengths)
    ref = loop64(torch.where(valid, wide[0], 1), torch.where(valid, wide[1], 0), wide[2], reverse)
    assert_close32(y.detach(), ref.detach(), "h")
    gy = random_inputs((3, 21, 2), torch.complex64, gen)[1]
    grads = torch.autograd.grad(y, ins, gy)
    for name, g, r in zip(["a", "b", "h0"], grads, torch.autograd.grad(ref, wide, gy.to(ref.dtype))):
        assert_close32(g, r, f"grad {name}")
    assert not grads[0][~valid.expand_as(a)].abs().any() and not grads[1][~valid.expand_as(b)].abs().any()
