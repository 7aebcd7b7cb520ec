"""The S7 layer, block and sequence models against independent references.

References: a float64/complex128 sequential loop in numpy written from the equations (not from the
layer's code paths), the official configurations' parameter counts, linearity of S5, streaming vs
whole-sequence outputs, and padding invariance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch

import statelayers  # noqa: F401
from statelayers.data.sequences import pad_collate
from statelayers.layers.discretization import stable_map, stable_map_inverse
from statelayers.layers.init import hippo_legs_eigenvalues
from statelayers.layers.s7 import S7, S7Block, token_bilinear

# --------------------------------------------------------------------------------------------- reference


def _softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def reference_s7(m: S7, u: np.ndarray, tau: np.ndarray | None = None) -> np.ndarray:
    """One sequence u (L, H) through the S7 equations, step by step in complex128."""
    L, H = u.shape
    n, R = m.n_states, m.dt_rank
    parts = 2 if m.complex_state else 1
    dirs = 2 if m.bidirectional else 1
    W = m.x_proj.weight.detach().double().numpy()
    z = u @ W.T + m.x_proj.bias.detach().double().numpy()
    nb, nc = parts * n * H, parts * dirs * n * H
    d, bflat, cflat = z[:, :R], z[:, R:R + nb], z[:, R + nb:R + nb + nc]
    delta = _softplus(d @ m.dt_proj.weight.detach().double().numpy().T + m.dt_proj.bias.detach().double().numpy())
    bm = bflat.reshape(L, parts, n, H)
    cm = cflat.reshape(L, parts, H, dirs * n)
    Bk = bm[:, 0] + (1j * bm[:, 1] if parts == 2 else 0)
    Ck = cm[:, 0] + (1j * cm[:, 1] if parts == 2 else 0)
    w = m.lambda_w.detach().double().numpy()
    re = {"stable": -1.0 / (m.stable_a * w**2 + m.stable_b), "exp": -np.exp(w),
          "clip": np.minimum(w, -1e-4)}[m.transition]
    lam = re + (1j * m.lambda_im.detach().double().numpy() if m.complex_state else 0)

    def elements(k):
        step = delta[k] * (1.0 if tau is None else tau[k])
        abar = np.exp(lam * step)
        gamma = {"zoh": (abar - 1) / lam, "dirac": 1.0, "async": (np.exp(lam * delta[k]) - 1) / lam}[m.discretization]
        return abar, gamma * (Bk[k] @ u[k])

    xs = np.zeros((L, dirs * n), dtype=complex)
    x = np.zeros(n, dtype=complex)
    for k in range(L):
        a, b = elements(k)
        x = a * x + b
        xs[k, :n] = x
    if dirs == 2:
        x = np.zeros(n, dtype=complex)
        for k in reversed(range(L)):
            a, b = elements(k)
            x = a * x + b
            xs[k, n:] = x
    s = m.stride
    out = []
    for k in range(s - 1, L, s):
        y = (Ck[k] @ xs[k]).real * (2 if m.conj_sym else 1)
        win = u[k - s + 1:k + 1]
        if m.pool == "last" or s == 1:
            upool = u[k]
        elif m.pool == "avg" or tau is None:
            upool = win.mean(0)
        else:
            tw = tau[k - s + 1:k + 1]
            upool = (win * tw[:, None]).sum(0) / tw.sum()
        out.append(y + m.D.detach().double().numpy() * upool)
    return np.stack(out)


CASES = [
    dict(),
    dict(conj_sym=False),
    dict(complex_state=False),
    dict(discretization="dirac"),
    dict(discretization="async"),
    dict(bidirectional=True),
    dict(transition="exp"),
    dict(transition="clip", conj_sym=False),
    dict(stride=3, pool="last"),
    dict(stride=3, pool="avg"),
    dict(stride=3, pool="timepool", discretization="async"),
]


@pytest.mark.parametrize("kw", CASES, ids=[",".join(f"{k}={v}" for k, v in c.items()) or "default" for c in CASES])
def test_layer_matches_float64_loop(kw):
    torch.manual_seed(0)
    m = S7(12, 8, block_size=4, **kw).double()
    with torch.no_grad():  # make the eigenvalues and steps differ per state and the decays visible
        m.lambda_w.add_(0.3 * torch.randn_like(m.lambda_w))
    L = 24
    u = torch.randn(2, L, 12, dtype=torch.float64)
    tau = torch.rand(2, L, dtype=torch.float64) * 3 if (kw.get("discretization") == "async" or "stride" in kw) else None
    y = m(u, tau).detach().numpy()
    for i in range(2):
        ref = reference_s7(m, u[i].numpy(), None if tau is None else tau[i].numpy())
        np.testing.assert_allclose(y[i], ref, rtol=1e-9, atol=1e-9)


def test_float32_close_to_float64():
    torch.manual_seed(1)
    m = S7(16, 16, discretization="async")
    u, tau = torch.randn(3, 200, 16), torch.rand(3, 200) * 2
    y32 = m(u, tau)
    y64 = m.double()(u.double(), tau.double())
    assert (y32.double() - y64).abs().max() < 1e-4 * y64.abs().max()


# --------------------------------------------------------------------------------------------- stability


@pytest.mark.parametrize("transition", ["stable", "exp", "clip", "direct"])
def test_transition_magnitude_at_most_one_for_any_input(transition):
    """|Λ̄_k| ≤ 1 for random parameters (incl. extreme ones), inputs and time gaps."""
    kw = dict(complex_state=False, discretization="dirac") if transition == "direct" else {}
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for trial in range(40):
        disc = kw.get("discretization", ["zoh", "dirac", "async"][trial % 3])
        m = S7(8, 8, transition=transition, **{**kw, "discretization": disc}).double()
        scale = 10.0 ** (trial % 5 - 1)  # 0.1 … 1000
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
        u = torch.randn(2, 30, 8, generator=g, dtype=torch.float64) * scale
        tau = torch.rand(2, 30, generator=g, dtype=torch.float64) * scale if disc == "async" else None
        a, _ = m._elements(u, tau)
        worst = max(worst, a.abs().max().item())
    assert worst <= 1.0 + 1e-12


def test_stable_map_is_consistent_between_init_and_forward():
    """The forward eigenvalues equal the HiPPO initialisation (the official code's inverse-map bug would give
    Re Λ = 0 here: design note s7.md §2)."""
    lam0 = hippo_legs_eigenvalues(8)
    assert np.allclose(lam0.real, -0.5)
    assert np.allclose(np.sort(lam0.imag), -np.sort(lam0.imag)[::-1])  # conjugate pairs
    for transition in ("stable", "exp", "clip"):
        m = S7(4, 16, block_size=8, conj_sym=False, transition=transition)
        lam = m.eigenvalues().detach().numpy()
        np.testing.assert_allclose(lam, np.tile(lam0, 2), rtol=1e-5, atol=1e-6)
    m = S7(4, 16, block_size=8, conj_sym=True)
    lam = m.eigenvalues().detach().numpy()
    np.testing.assert_allclose(np.sort(lam.imag)[::2], np.sort(lam0.imag[lam0.imag > 0]), rtol=1e-5)
    w = stable_map_inverse(torch.tensor([-0.5, -1.9, -1e-3]), 1.0, 0.5)
    np.testing.assert_allclose(stable_map(w, 1.0, 0.5).numpy(), [-0.5, -1.9, -1e-3], rtol=1e-6)
    with pytest.raises(ValueError, match="stable_map reaches only"):
        stable_map_inverse(torch.tensor([-3.0]), 1.0, 0.5)


def test_s5_is_linear_and_s7_is_not():
    torch.manual_seed(0)
    u, v = torch.randn(1, 40, 8, dtype=torch.float64), torch.randn(1, 40, 8, dtype=torch.float64)
    s5 = S7(8, 8, input_dependent=False).double()
    assert torch.allclose(s5(2 * u - 3 * v), 2 * s5(u) - 3 * s5(v), atol=1e-10)
    s7 = S7(8, 8).double()
    assert not torch.allclose(s7(2 * u - 3 * v), 2 * s7(u) - 3 * s7(v), atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradients_finite_and_bounded_at_16k(dtype):
    torch.manual_seed(0)
    norms = {}
    for L in (1024, 16384):
        torch.manual_seed(0)
        m = S7Block(16, 16, norm="layer")
        u = torch.randn(1, L, 16)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            y = m(u)
        y.float().pow(2).mean().backward()
        grads = torch.cat([p.grad.reshape(-1) for p in m.parameters() if p.grad is not None])
        assert torch.isfinite(grads).all(), f"non-finite gradient at L={L}, {dtype}"
        norms[L] = grads.norm().item()
    # the loss is a mean over steps: a stable layer's gradient does not grow with the length
    assert norms[16384] < 4 * norms[1024], norms


# --------------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("name,count", [("s7_eigenworms", 44_660), ("s7_lra_image", 727_518),
                                        ("s7_lra_pathfinder", 91_568)])
def test_official_parameter_counts(name, count):
    """The three configurations whose trained artefacts exist in the official repo (design note §8)."""
    m = timm.create_model(name)
    assert sum(p.numel() for p in m.parameters()) == count


@pytest.mark.parametrize("name", ["s7_tiny", "s7_small", "s5_small", "s7_dvs_gesture", "s7_shd", "s7_listops",
                                  "s7_lra_text", "s7_lra_retrieval", "gru_small"])
def test_models_build_and_run(name):
    kw = {"vocab_size": 50} if name != "s7_lra_retrieval" else {}
    # training mode: the batch-norm configurations normalise with batch statistics (untrained running
    # statistics are the identity, and the layer is cubic in its input)
    m = timm.create_model(name, num_classes=3, **kw).train()
    toks = [torch.randint(0, 50, (n,)) for n in (37, 20)]
    items = [({"tokens": t, "tau": torch.rand(len(t))} | ({"tokens2": t.flip(0)} if name.endswith("retrieval")
                                                          else {}), 0) for t in toks]
    batch, _ = pad_collate(items)
    if name == "gru_small":
        batch.pop("tau")
    out = m(**batch)
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def _stream(m, seq, tau=None):
    st = m.init_state(seq.shape[0])
    out = None
    for k in range(seq.shape[1]):
        o, st = m.step(seq[:, k], st, None if tau is None else tau[:, k])
        out = o if o is not None else out
    return out


@pytest.mark.parametrize("kw", [
    dict(vocab_size=20, discretization="async", stride=4, num_stages=2, expansion=2, pool="timepool",
         head="timepool"),
    dict(vocab_size=20, stride=2, pool="avg", head="pool", norm="batch"),
    dict(in_chans=3, head="last"),
    dict(in_chans=3, head="pool", transition="exp"),
])
def test_streaming_equals_whole_sequence(kw):
    """Step by step equals the whole sequence: to rounding in float64 (the logic is exact), and in float32 within
    the forward-error bound `_rounding_bound` over L = 32 steps of H = 32 channels (the two paths sum in different
    orders, which differ between CPUs' vector widths)."""
    L, H = 32, 32  # steps; s7_tiny's d_model
    for dtype in (torch.float64, torch.float32):
        torch.manual_seed(0)
        m = timm.create_model("s7_tiny", num_classes=5, **kw).eval().to(dtype)
        seq = torch.randint(0, 20, (2, L)) if "vocab_size" in kw else torch.randn(2, L, 3, dtype=torch.float64)
        seq = seq if "vocab_size" in kw else seq.to(dtype)
        tau = torch.rand(2, L, dtype=torch.float64).to(dtype) if kw.get("discretization") == "async" else None
        whole = m(**({"tokens": seq} if "vocab_size" in kw else {"x": seq}), tau=tau)
        err = (_stream(m, seq, tau) - whole).abs().max().item()
        bound = _rounding_bound(dtype, L * H, whole.abs().max().item())
        assert err <= bound, f"{dtype}: streaming vs whole differ by {err:.3g} > bound {bound:.3g}"


def test_streaming_per_step_head_none():
    torch.manual_seed(0)
    m = timm.create_model("s7_tiny", num_classes=4, in_chans=2, head="none").eval()
    x = torch.randn(1, 10, 2)
    whole = m(x=x)  # (1, 10, 4): one output per step
    st = m.init_state(1)
    steps = []
    for k in range(10):
        o, st = m.step(x[:, k], st)
        steps.append(o)
    # float32 both ways, summed in different orders: the forward-error bound over 10 steps of H = 32 channels
    err = (torch.stack(steps, 1) - whole).abs().max().item()
    assert err <= _rounding_bound(torch.float32, 10 * 32, whole.abs().max().item()), err


def _rounding_bound(dtype: torch.dtype, n_acc: int, scale: float) -> float:
    """A forward-error bound for comparing two evaluations of the same function that round differently.

    Each output is a sum of at most ``n_acc`` rounded terms along any path through the network; the standard
    bound on a recursively summed sum of N terms is N·ε·Σ|terms| (Higham, Accuracy and Stability of Numerical
    Algorithms, §4.2), with ε the dtype's machine epsilon. We take Σ|terms| to be of the order of the output
    scale ``scale``, floored at 1 (activations are normalised, so an O(1) network's intermediates are O(1) even
    where its outputs are small). Two evaluations each within that bound differ by at most twice it. The bound
    holds for any summation order or vector width (AVX2, AVX-512, ...), unlike a tolerance read off one machine.
    """
    return 2 * n_acc * torch.finfo(dtype).eps * max(1.0, scale)


@pytest.mark.parametrize("kw", [dict(), dict(bidirectional=True), dict(stride=3, pool="avg"),
                                dict(stride=2, pool="last", num_stages=2, expansion=2),
                                dict(stride=2, pool="avg", num_stages=2, depth=1),
                                dict(norm="batch", discretization="async")])
def test_padding_does_not_change_results(kw):
    """A padded batch gives each sequence the logits it gets alone (also bidirectional).

    In float64 the two agree to rounding, which shows the masking exact; in float32 the batched and the single
    evaluation sum in different orders and vector widths (2.5e-5 apart on an AVX-512 CPU, 7e-6 on AVX2), so the
    float32 tolerance is the forward-error bound `_rounding_bound` with n_acc = L·H: a logit accumulates at most
    L = 30 steps of the scan, each a contraction over H = 32 channels. For float32 that is 2·960·1.2e-7 ≈ 2.3e-4
    on O(1) logits; a padding bug (padded steps entering the state, the pool or the norm) moves logits by O(0.1)."""
    L, H = 30, 32  # the longest sequence below; s7_tiny's d_model
    for dtype in (torch.float64, torch.float32):
        torch.manual_seed(0)
        m = timm.create_model("s7_tiny", num_classes=4, vocab_size=30, **kw).eval()
        with torch.no_grad():  # non-zero biases everywhere, as after training: padded steps then carry non-zeros
            for name, p in m.named_parameters():
                if name.endswith("bias"):
                    p.add_(0.1 * torch.randn_like(p))
        m = m.to(dtype)
        seqs = [torch.randint(0, 30, (n,)) for n in (L, 17, 9)]
        items = [({"tokens": s, "tau": torch.rand(len(s), dtype=torch.float64).to(dtype)}, 0) for s in seqs]
        batch, _ = pad_collate(items)
        together = m(**batch)
        for i, (inp, _) in enumerate(items):
            alone = m(tokens=inp["tokens"][None], tau=inp["tau"][None])[0]
            err = (together[i] - alone).abs().max().item()
            bound = _rounding_bound(dtype, L * H, alone.abs().max().item())
            assert err <= bound, f"{dtype} sequence {i}: padded vs alone differ by {err:.3g} > bound {bound:.3g}"


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    m = timm.create_model("s7_tiny", num_classes=3, in_chans=2, stride=2, num_stages=2, expansion=2)
    m(x=torch.randn(2, 16, 2)).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_ssm_group_and_no_weight_decay():
    m = timm.create_model("s7_tiny", num_classes=3, in_chans=2)
    ssm_ids = {id(p) for p in m.ssm_parameters()}
    named = dict(m.named_parameters())
    assert {n for n, p in named.items() if id(p) in ssm_ids} == {f"blocks.{i}.ssm.{k}" for i in range(2)
                                                                  for k in ("lambda_w", "lambda_im")}
    assert "blocks.0.ssm.dt_proj.bias" in m.no_weight_decay()


def test_bad_inputs_raise_clear_errors():
    m = timm.create_model("s7_tiny", num_classes=3, in_chans=2)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, length, 2\)"):
        m(x=torch.randn(2, 10, 3))
    with pytest.raises(ValueError, match="float tensor"):
        m(x=torch.ones(2, 10, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="dense inputs"):
        m(tokens=torch.zeros(2, 10, dtype=torch.long))
    t = timm.create_model("s7_tiny", num_classes=3, vocab_size=5)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 5\)"):
        t(tokens=torch.full((1, 4), 5))
    with pytest.raises(ValueError, match="integer tensor"):
        t(tokens=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="needs tau"):
        S7(4, 4, discretization="async")(torch.randn(1, 5, 4))
    with pytest.raises(ValueError, match="exactly one of in_chans"):
        timm.create_model("s7_tiny", num_classes=3)
    with pytest.raises(ValueError, match="b >= 1/2"):
        S7(4, 4, stable_b=0.1)
    with pytest.raises(ValueError, match="cannot run step by step"):
        S7(4, 4, bidirectional=True).init_state(1)
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model("s7_tiny", pretrained=True, in_chans=1)
    with pytest.raises(ValueError, match="transition must be"):
        S7(4, 4, transition="official")


def test_hippo_block_diagonal_init_and_dt_range():
    m = S7(16, 32, block_size=8, conj_sym=True, dt_min=1e-3, dt_max=1e-1)
    assert m.n_states == 16
    dt = torch.nn.functional.softplus(m.dt_proj.bias).detach()
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    assert m.dt_rank == math.ceil(16 / 16)


def test_token_bilinear_gradcheck_and_chunking():
    """The chunked per-token bilinear form (B_k u_k, C_k x_k) against its materialised definition."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(11, 5, dtype=torch.float64, generator=g, requires_grad=True)
    v = torch.randn(11, 3, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(4 * 3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(12, dtype=torch.float64, generator=g, requires_grad=True)
    dense = ((u @ w.T + b).view(11, 4, 3) * v[:, None, :]).sum(-1)
    for chunk in (1, 4, 64):
        assert torch.allclose(token_bilinear(u, v, w, b, 4, chunk=chunk), dense)
    assert torch.autograd.gradcheck(lambda *t: token_bilinear(*t, 4, chunk=4), (u, v, w, b))
    assert token_bilinear(u[:0], v[:0], w, b, 4).shape == (0, 4)


def test_bf16_autocast_keeps_the_state_in_float32():
    m = S7(8, 8)
    u = torch.randn(2, 50, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = m._elements(u, None)
        y = m(u.bfloat16())
    assert a.dtype == torch.complex64 and b.dtype == torch.complex64
    assert y.dtype == torch.bfloat16
    assert (y.float() - m(u)).abs().max() < 0.05 * m(u).abs().max()


# ------------------------------------------------------------------------------------- torch.compile, Triton


def _step(model, x, **kw):
    model.zero_grad(set_to_none=True)
    out = model(x, **kw)
    out.sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("scan_impl", ["auto", "triton"])
def test_compiles_whole_and_equals_eager(scan_impl):
    """`torch.compile(fullgraph=True)` of an S7 model (a bidirectional layer, async steps, padded lengths): no
    graph break, and AOTAutograd's trace equals eager, outputs and gradients. The scan (numba on CPU, Triton
    where forced, run here in Triton's interpreter) and the per-token bilinear forms are custom ops: the trace
    holds one op each instead of tracing into numba (which failed) or unrolling loops."""
    if scan_impl == "triton":
        pytest.importorskip("triton")
    torch.manual_seed(0)
    m = timm.create_model("s7_tiny", in_chans=3, num_classes=4, bidirectional=True, discretization="async",
                          scan_impl=scan_impl)
    x, tau, lengths = torch.randn(2, 24, 3), torch.rand(2, 24), torch.tensor([24, 17])
    eager, eager_grads = _step(m, x, tau=tau, lengths=lengths)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    out, grads = _step(compiled, x, tau=tau, lengths=lengths)
    torch.testing.assert_close(out, eager, rtol=0, atol=0)
    assert len(grads) == len(eager_grads)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.slow
def test_inductor_compile_matches_eager():
    torch.manual_seed(0)
    m = timm.create_model("s7_tiny", in_chans=3, num_classes=4)
    x = torch.randn(2, 64, 3)
    eager, eager_grads = _step(m, x)
    out, grads = _step(torch.compile(m, fullgraph=True), x)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_layer_on_the_triton_scan_matches_float64_loop():
    """The S7 layer with its scan on the Triton kernels (forced; the interpreter here) against the float64
    reference, bidirectional, as `test_layer_matches_float64_loop` checks the CPU path."""
    pytest.importorskip("triton")
    torch.manual_seed(0)
    m = S7(4, 8, bidirectional=True, scan_impl="triton").double()
    u = torch.randn(1, 19, 4, dtype=torch.float64)
    ref = torch.from_numpy(reference_s7(m, u[0].numpy()))
    y = S7(4, 8, bidirectional=True, scan_impl="triton")
    y.load_state_dict({k: v.float() for k, v in m.state_dict().items()})
    out = y(u.float())[0].double()
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()


# ----------------------------------------------------------- the fused discretisation + scan (kernels/s7_ops.py)

S7_SCAN_CASES = [
    dict(mode="zoh"), dict(mode="zoh", tau=True, lengths=True), dict(mode="dirac", reverse=True),
    dict(mode="async", tau=True, reverse=True, lengths=True), dict(mode="zoh", broadcast=True, chunks=True),
    dict(mode="async", tau=True, lengths=True, chunks=True),
]


@pytest.mark.parametrize("case", S7_SCAN_CASES, ids=lambda c: "-".join(k if v is True else str(v)
                                                                       for k, v in c.items()))
def test_fused_s7_scan_matches_the_reference(case, monkeypatch):
    """s7_scan (Triton, in the interpreter) = linear_scan(*discretize(...)) computed in complex128, values and
    the gradients of Δ, Bu and Λ: every discretisation, time steps, padded lengths, both directions, S5's
    broadcast Δ, and the multi-chunk path (`chunks`: 4 steps per chunk, 2 lanes per program)."""
    pytest.importorskip("triton")
    from statelayers.layers.discretization import discretize
    from statelayers.layers.kernels import s7_ops

    if case.get("chunks"):
        from statelayers.layers.kernels import scan_triton

        monkeypatch.setattr(scan_triton, "MIN_CHUNK", 4)
        monkeypatch.setattr(scan_triton, "MAX_CHUNK", 4)
        monkeypatch.setattr(scan_triton, "MAX_TILE", 8)
    g = torch.Generator().manual_seed(0)
    bsz, length, n = 2, 13, 3
    # S5's Δ is one per state, broadcast over batch and time (stride 0 in the kernels)
    delta = torch.rand(n if case.get("broadcast") else (bsz, length, n), generator=g) * 0.5 + 0.05
    bu = torch.randn(bsz, length, 2, n, generator=g).movedim(2, 0)  # the layer's permuted layout
    lam = torch.complex(-torch.rand(n, generator=g) - 0.1, torch.randn(n, generator=g) * 3)
    tau = torch.rand(bsz, length, generator=g) * 2 if case.get("tau") else None
    lengths = torch.tensor([length, 6]) if case.get("lengths") else None
    reverse = case.get("reverse", False)
    gy = torch.complex(torch.randn(bsz, length, n, generator=g), torch.randn(bsz, length, n, generator=g))

    ins = [t.clone().requires_grad_() for t in (delta, bu, lam)]
    x = s7_ops.s7_scan(ins[0].expand(bsz, length, n), *ins[1:], tau, lengths, case["mode"], reverse)
    wide = [t.detach().to(torch.complex128 if t.is_complex() else torch.float64).requires_grad_() for t in ins]
    a, b = discretize(wide[2], wide[0].expand(bsz, length, n), torch.complex(wide[1][0], wide[1][1]),
                      None if tau is None else tau.double(), case["mode"])
    ref = statelayers.linear_scan(a, b, reverse=reverse, lengths=lengths, impl="reference")
    scale = ref.abs().max().item()
    assert (x.to(ref.dtype) - ref).abs().max().item() <= 1e-5 * scale
    grads = torch.autograd.grad(x, ins, gy)
    ref_grads = torch.autograd.grad(ref, wide, gy.to(ref.dtype))
    for name, gr, rr in zip(["delta", "bu", "lam"], grads, ref_grads):
        assert gr.shape == rr.shape
        err = (gr.to(rr.dtype) - rr).abs().max().item()
        assert err <= 1e-5 * rr.abs().max().item() + 1e-12, f"grad {name}: {err:.3g} vs scale {rr.abs().max():.3g}"


@pytest.mark.parametrize("kw", [dict(), dict(bidirectional=True, discretization="async"),
                                dict(input_dependent=False, discretization="dirac")], ids=["s7", "bidir-async", "s5"])
def test_layer_fused_path_as_accurate_as_reference(kw):
    """The S7 layer on the fused discretisation + scan (forced with scan_impl="triton") against its reference path
    (scan_impl="torch"): both in float32 against the reference in float64, outputs and every parameter's gradient;
    the fused path's error within 4x the reference path's (or 1e-6)."""
    pytest.importorskip("triton")

    def run(impl, dtype):
        torch.manual_seed(0)
        m = S7(6, 8, scan_impl=impl, **kw).to(dtype)
        with torch.no_grad():
            m.lambda_w.add_(0.3 * torch.randn_like(m.lambda_w))
        g = torch.Generator().manual_seed(1)
        u = torch.randn(2, 17, 6, generator=g).to(dtype)
        tau = (torch.rand(2, 17, generator=g) * 2).to(dtype) if kw.get("discretization") == "async" else None
        y = m(u, tau, torch.tensor([17, 11]))
        loss = (y * torch.linspace(-1, 1, y.numel(), dtype=dtype).view_as(y)).sum()
        grads = torch.autograd.grad(loss, list(m.parameters()))
        return y.detach(), torch.cat([gr.flatten() for gr in grads])

    exact, ref, fused = run("torch", torch.float64), run("torch", torch.float32), run("triton", torch.float32)
    for k, what in enumerate(("output", "gradients")):
        err_ref = ((ref[k].double() - exact[k]).norm() / exact[k].norm()).item()
        err_fused = ((fused[k].double() - exact[k]).norm() / exact[k].norm()).item()
        assert err_fused <= max(4 * err_ref, 1e-6), f"{what}: fused {err_fused:.3g}, reference {err_ref:.3g}"
