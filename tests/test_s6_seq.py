"""S6, Mamba's block, and the `s6_*` sequence models against independent references.

The reference is a float64 loop over time written here from the equations of Gu & Dao 2023 (arXiv 2312.00752,
Alg. 2 and the block of Fig. 3), not from the layer's code paths: it keeps the conv's last K inputs itself, steps
the state one step at a time and never calls the scan. Float32 results are compared with it within a forward-error
bound (`_rounding_bound`), float64 results to rounding.
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

import statelayers  # noqa: F401  (registers the models)
from statelayers.data.sequences import pad_collate
from statelayers.engine import TrainConfig
from statelayers.engine.optim import build_optimizer, learning_rate
from statelayers.layers import mamba
from statelayers.layers.mamba import S6, S6Block

H, E, N, K, R = 8, 16, 4, 4, 2  # the small layer of the reference tests: d_model, d_inner, d_state, d_conv, dt_rank

# --------------------------------------------------------------------------------------------- reference


def _softplus(x: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.exp(-x.abs())) + x.clamp(min=0)


def _silu(x: torch.Tensor) -> torch.Tensor:
    return x / (1 + torch.exp(-x))


def reference_s6(p: dict[str, torch.Tensor], u: torch.Tensor, lengths: list[int] | None = None) -> list[torch.Tensor]:
    """Each sequence's outputs (n_i, H) through Mamba's block, one step at a time, from the parameters `p` (float64
    tensors by `S6`'s parameter names, which may require grad); only the valid steps of a padded sequence are run."""
    w_in, w_out = p["in_proj.weight"], p["out_proj.weight"]
    b_in = p.get("in_proj.bias", torch.zeros(w_in.shape[0], dtype=u.dtype))
    b_out = p.get("out_proj.bias", torch.zeros(w_out.shape[0], dtype=u.dtype))
    conv_w, conv_b = p["conv1d.weight"][:, 0], p["conv1d.bias"]  # (E, K): conv_w[:, K-1] weighs the current step
    e, k = conv_w.shape
    n = p["A_log"].shape[1]
    r = p["dt_proj.weight"].shape[1]
    A = -torch.exp(p["A_log"])
    outs = []
    for i in range(u.shape[0]):
        steps = u.shape[1] if lengths is None else lengths[i]
        h = torch.zeros(e, n, dtype=u.dtype)
        past = [torch.zeros(e, dtype=u.dtype) for _ in range(k - 1)]  # x of the K-1 previous steps, oldest first
        ys = []
        for t in range(steps):
            xz = w_in @ u[i, t] + b_in
            x, z = xz[:e], xz[e:]
            window = past + [x]
            xc = _silu(sum(conv_w[:, j] * window[j] for j in range(k)) + conv_b)
            past = window[1:]
            dbc = p["x_proj.weight"] @ xc
            delta = _softplus(p["dt_proj.weight"] @ dbc[:r] + p["dt_proj.bias"])  # (E,)
            b_t, c_t = dbc[r:r + n], dbc[r + n:]
            h = torch.exp(delta[:, None] * A) * h + (delta * xc)[:, None] * b_t[None, :]  # ZOH A, Euler input
            y = h @ c_t + p["D"] * xc
            ys.append(w_out @ (y * _silu(z)) + b_out)
        outs.append(torch.stack(ys))
    return outs


def _rounding_bound(dtype: torch.dtype, n_acc: int, scale: float) -> float:
    """The forward-error bound of two evaluations of the same function that round differently (as in test_s7.py).

    An output that is a sum of at most `n_acc` rounded terms, each a chain of rounded operations, is off by at most
    about n_acc·ε·Σ|terms| (Higham, Accuracy and Stability of Numerical Algorithms, §3-4); Σ|terms| is taken as the
    output scale, floored at 1 (the activations are O(1)); two evaluations differ by at most twice that. It holds
    for any summation order or vector width, unlike a tolerance read off one machine."""
    return 2 * n_acc * torch.finfo(dtype).eps * max(1.0, scale)


def _n_acc(length: int) -> int:
    """Terms an output accumulates: the state sums ≤ L steps, each made of projections over ≤ H + E inputs."""
    return length * (H + E)


def _layer(seed: int = 0, **kw) -> S6:
    torch.manual_seed(seed)
    m = S6(H, N, expand=E // H, d_conv=K, dt_rank=R, **kw)
    with torch.no_grad():  # non-trivial values everywhere: per-channel A, visible decays, D ≠ 1, biases ≠ 0
        m.A_log.add_(0.3 * torch.randn_like(m.A_log))
        m.D.add_(0.5 * torch.randn_like(m.D))
        m.dt_proj.bias.add_(1.5)  # Δ ≈ 0.1-1.5: the state forgets over a few steps, so every step matters
        for name, q in m.named_parameters():
            if name.endswith("bias") and name != "dt_proj.bias":
                q.add_(0.2 * torch.randn_like(q))
    return m


def _params64(m: S6) -> dict[str, torch.Tensor]:
    return {k: v.detach().double().requires_grad_() for k, v in m.named_parameters()}


# --------------------------------------------------------------------------------------------- the layer


@pytest.mark.parametrize("padded", [False, True], ids=["whole", "padded"])
@pytest.mark.parametrize("kw", [dict(), dict(bias=True, conv_bias=True)], ids=["mamba", "with_biases"])
def test_layer_matches_float64_loop(kw, padded):
    """Values in float64 (to rounding: the logic is exact) and float32 (within the forward-error bound), and the
    gradients of a random projection of the outputs w.r.t. the input and every parameter, against the loop. Padded
    steps hold large values: they must not reach the valid outputs, and their inputs get zero gradient."""
    L = 20
    lengths = [20, 13, 6] if padded else None
    m = _layer(**kw)
    g = torch.Generator().manual_seed(1)
    u = torch.randn(3, L, H, generator=g, dtype=torch.float64)
    if padded:
        for i, n_i in enumerate(lengths):
            u[i, n_i:] = 1e3 * torch.randn(L - n_i, H, generator=g, dtype=torch.float64)
    proj = torch.randn(3, L, H, generator=g, dtype=torch.float64)  # the loss Σ proj ⊙ y over valid steps

    p = _params64(m)
    u_ref = u.clone().requires_grad_()
    ref = reference_s6(p, u_ref, lengths)
    loss = sum((proj[i, :len(y)] * y).sum() for i, y in enumerate(ref))
    loss.backward()
    scale = max(y.abs().max().item() for y in ref)
    lt = None if lengths is None else torch.tensor(lengths)

    for dtype in (torch.float64, torch.float32):
        mm = _layer(**kw).to(dtype)
        x = u.to(dtype, copy=True).requires_grad_()
        y = mm(x, lengths=lt)
        valid = [y[i, :len(r)] for i, r in enumerate(ref)]
        err = max((v.double() - r.detach()).abs().max().item() for v, r in zip(valid, ref))
        bound = _rounding_bound(dtype, _n_acc(L), scale)
        assert err <= bound, f"{dtype}: values differ from the loop by {err:.3g} > {bound:.3g}"
        sum((proj[i, :len(v)].to(dtype) * v).sum() for i, v in enumerate(valid)).backward()
        grads = {"input": (x.grad, u_ref.grad)} | {k: (q.grad, p[k].grad) for k, q in mm.named_parameters()}
        for name, (got, want) in grads.items():
            # backward runs the chain again in reverse: twice the terms; scaled by the gradient's own size
            gb = _rounding_bound(dtype, 2 * _n_acc(L), want.abs().max().item())
            gerr = (got.double() - want).abs().max().item()
            assert gerr <= gb, f"{dtype} gradient of {name}: {gerr:.3g} > {gb:.3g}"
        if padded:
            for i, n_i in enumerate(lengths):
                assert torch.equal(x.grad[i, n_i:], torch.zeros_like(x.grad[i, n_i:]))


def test_padded_steps_cannot_leak_nan():
    m = _layer().double()
    u = torch.randn(2, 12, H, dtype=torch.float64)
    lengths = torch.tensor([12, 5])
    alone = m(u[1:, :5])
    u[1, 5:] = float("nan")
    y = m(u, lengths=lengths)
    assert torch.isfinite(y[0]).all() and torch.isfinite(y[1, :5]).all()
    assert (y[1, :5] - alone[0]).abs().max() <= _rounding_bound(torch.float64, _n_acc(12), alone.abs().max().item())


def test_causal_conv_does_not_leak_the_future():
    """Changing x_{t+1..} leaves y_{0..t} unchanged, and ∂y_t/∂u_s is exactly 0 for s > t; y_t does depend on u_t."""
    m = _layer().double()
    L = 16
    u = torch.randn(2, L, H, dtype=torch.float64)
    y = m(u)
    for t in (0, 1, 2, 7, L - 2):
        v = u.clone()
        v[:, t + 1:] = torch.randn_like(v[:, t + 1:]) * 10
        yv = m(v)
        assert torch.equal(yv[:, :t + 1], y[:, :t + 1]), f"step {t} reads the future"
        assert (yv[:, t + 1] - y[:, t + 1]).abs().max() > 1e-3  # the change is seen from t + 1 on
        x = u.clone().requires_grad_()
        m(x)[:, t].sum().backward()
        assert torch.equal(x.grad[:, t + 1:], torch.zeros_like(x.grad[:, t + 1:]))
        assert x.grad[:, t].abs().sum() > 0


def test_layer_streaming_step_equals_forward():
    L = 24
    for dtype in (torch.float64, torch.float32):
        m = _layer().to(dtype)
        u = torch.randn(2, L, H, dtype=torch.float64).to(dtype)
        whole = m(u)
        st = m.init_state(2)
        steps = []
        for t in range(L):
            o, st = m.step(u[:, t], st)
            steps.append(o)
        err = (torch.stack(steps, 1) - whole).abs().max().item()
        bound = _rounding_bound(dtype, _n_acc(L), whole.abs().max().item())
        assert err <= bound, f"{dtype}: streaming vs whole {err:.3g} > {bound:.3g}"


def test_streaming_uses_the_shared_selective_step(monkeypatch):
    """The single step is the selective-SSM step of layers/selective.py (shared with S6LA), not a copy of it."""
    calls = []
    step = mamba.ssm_step

    def counting(*args):
        calls.append(1)
        return step(*args)

    monkeypatch.setattr(mamba, "ssm_step", counting)
    m = _layer()
    m.step(torch.randn(2, H), m.init_state(2))
    assert calls == [1]


def test_mamba_init():
    torch.manual_seed(0)
    m = S6(64, 16, n_layer=4)
    assert m.d_inner == 128 and m.dt_rank == 4 and m.in_proj.bias is None and m.out_proj.bias is None
    assert torch.equal(m.A_log, torch.arange(1, 17, dtype=torch.float32).log().expand(128, 16))
    assert torch.equal(m.D, torch.ones(128))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert m.dt_proj.weight.abs().max() <= 4 ** -0.5
    # out_proj: PyTorch's default uniform(±1/sqrt(E)), then ÷ sqrt(n_layer) (Mamba's prenorm-residual rescale)
    assert m.out_proj.weight.abs().max() <= 1 / math.sqrt(128) / 2
    assert m.out_proj.weight.abs().max() > 0.8 / math.sqrt(128) / 2


def test_bf16_autocast_keeps_the_state_in_float32(monkeypatch):
    seen = []
    scan = mamba.linear_scan

    def recording(a, b, **kw):
        seen.append((a.dtype, b.dtype))
        return scan(a, b, **kw)

    monkeypatch.setattr(mamba, "linear_scan", recording)
    m = _layer()
    u = torch.randn(2, 30, H)
    ref = m(u)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(u)
    assert seen[-1] == (torch.float32, torch.float32) and y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().max() < 0.05 * ref.abs().max()


# --------------------------------------------------------------------------------------------- the models


def _closed_form_count(d_model, d_state, depth, expand=2, d_conv=4, in_chans=3, num_classes=10, bias=False):
    e, r = expand * d_model, math.ceil(d_model / 16)
    block = (2 * d_model                                  # LayerNorm
             + d_model * 2 * e + (2 * e if bias else 0)    # in_proj
             + e * d_conv + e                             # depthwise conv and its bias
             + e * (r + 2 * d_state)                      # x_proj → δ, B, C
             + r * e + e                                  # dt_proj
             + e * d_state + e                            # A_log, D
             + e * d_model + (d_model if bias else 0))    # out_proj
    return (in_chans + 1) * d_model + depth * block + 2 * d_model + (d_model + 1) * num_classes


@pytest.mark.parametrize("name,kw,size", [
    ("s6_small", {}, dict(d_model=64, d_state=16, depth=4)),
    ("s6_tiny", {}, dict(d_model=32, d_state=16, depth=2)),
    ("s6_tiny", dict(expand=3, d_conv=2, bias=True), dict(d_model=32, d_state=16, depth=2, expand=3, d_conv=2,
                                                          bias=True)),
])
def test_parameter_count_closed_form(name, kw, size):
    m = timm.create_model(name, in_chans=3, num_classes=10, **kw)
    assert sum(q.numel() for q in m.parameters()) == _closed_form_count(**size)


def test_s6_small_size_and_the_other_baselines_unchanged():
    """s6_small's count (its docstring), and S7 / S5 / GRU at the counts they had before the S6 mixer was added."""
    counts = {n: sum(q.numel() for q in timm.create_model(n, in_chans=3, num_classes=10).parameters())
              for n in ("s5_small", "s6_small", "s7_small", "gru_small")}
    assert counts == {"s5_small": 35_018, "s6_small": 132_106, "s7_small": 1_084_890, "gru_small": 50_826}


def test_s6_small_trains_one_step_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    m = timm.create_model("s6_small", in_chans=3, num_classes=4).train()
    x, target = torch.randn(4, 40, 3), torch.randint(0, 4, (4,))
    lengths = torch.tensor([40, 33, 21, 8])
    loss = F.cross_entropy(m(x=x, lengths=lengths), target)
    assert math.isclose(loss.item(), math.log(4), abs_tol=0.5)  # a fresh model starts near chance
    loss.backward()
    missing = [n for n, q in m.named_parameters() if q.grad is None or not q.grad.abs().sum() > 0]
    assert not missing, missing
    assert all(torch.isfinite(q.grad).all() for q in m.parameters())
    cfg = TrainConfig(model="s6_small", data="acsf1", task="sequence").resolved()  # the S7 recipe, as s5_small
    opt = build_optimizer(cfg, m, learning_rate(cfg, 1))
    before = {n: q.detach().clone() for n, q in m.named_parameters()}
    opt.step()
    assert all(not torch.equal(before[n], q) for n, q in m.named_parameters())
    assert F.cross_entropy(m(x=x, lengths=lengths), target) < loss


def test_no_weight_decay_and_ssm_group_like_mamba():
    m = timm.create_model("s6_small", in_chans=3, num_classes=4)
    assert m.no_weight_decay() == {f"blocks.{i}.ssm.{k}" for i in range(4) for k in ("A_log", "D", "dt_proj.bias")}
    assert m.ssm_parameters() == []  # Mamba has no separate SSM learning rate
    cfg = TrainConfig(model="s6_small", data="acsf1", task="sequence").resolved()
    opt = build_optimizer(cfg, m, learning_rate(cfg, 1))
    decayed = {id(q) for g in opt.param_groups if g["weight_decay"] > 0 for q in g["params"]}
    named = dict(m.named_parameters())
    assert not any(id(named[n]) in decayed for n in m.no_weight_decay())
    assert id(named["blocks.0.ssm.in_proj.weight"]) in decayed


def _stream(m, seq):
    st = m.init_state(seq.shape[0])
    outs = []
    for t in range(seq.shape[1]):
        o, st = m.step(seq[:, t], st)
        outs.append(o)
    return outs


@pytest.mark.parametrize("kw", [dict(in_chans=3, head="pool"), dict(in_chans=3, head="last"),
                                dict(vocab_size=20, head="pool", norm="batch"), dict(in_chans=3, head="none")])
def test_model_streaming_equals_whole_sequence(kw):
    L, width = 24, 32 + 64  # steps; s6_tiny's H + E
    for dtype in (torch.float64, torch.float32):
        torch.manual_seed(0)
        m = timm.create_model("s6_tiny", num_classes=5, **kw).eval().to(dtype)
        dense = torch.randn(2, L, 3, dtype=torch.float64).to(dtype)
        seq = torch.randint(0, 20, (2, L)) if "vocab_size" in kw else dense
        whole = m(**({"tokens": seq} if "vocab_size" in kw else {"x": seq}))
        outs = _stream(m, seq)
        got = torch.stack(outs, 1) if kw["head"] == "none" else outs[-1]
        err = (got - whole).abs().max().item()
        bound = _rounding_bound(dtype, L * width, whole.abs().max().item())
        assert err <= bound, f"{dtype}: streaming vs whole {err:.3g} > {bound:.3g}"


def test_model_padding_does_not_change_results():
    """A padded batch gives each sequence the logits it gets alone (float64: to rounding; float32: within the bound)."""
    L, width = 30, 32 + 64
    for dtype in (torch.float64, torch.float32):
        torch.manual_seed(0)
        m = timm.create_model("s6_tiny", num_classes=4, vocab_size=30).eval().to(dtype)
        seqs = [torch.randint(0, 30, (n,)) for n in (L, 17, 9)]
        batch, _ = pad_collate([({"tokens": s}, 0) for s in seqs])
        together = m(**batch)
        for i, s in enumerate(seqs):
            alone = m(tokens=s[None])[0]
            err = (together[i] - alone).abs().max().item()
            assert err <= _rounding_bound(dtype, L * width, alone.abs().max().item()), f"{dtype} sequence {i}: {err}"


def test_block_is_mambas_residual():
    """x + S6(Norm(x)): no gate after the layer, and the layer sees the normalised input."""
    torch.manual_seed(0)
    blk = S6Block(H, N, expand=2, d_conv=K).double().eval()
    x = torch.randn(2, 10, H, dtype=torch.float64)
    torch.testing.assert_close(blk(x), x + blk.ssm(blk.norm(x)), rtol=0, atol=0)


def test_bad_configurations_raise():
    with pytest.raises(ValueError, match="mixer must be"):
        timm.create_model("s7_tiny", in_chans=2, mixer="s4")
    with pytest.raises(ValueError, match="no token pooling"):
        timm.create_model("s6_tiny", in_chans=2, stride=2)
    with pytest.raises(ValueError, match="no token pooling"):
        timm.create_model("s6_tiny", in_chans=2, num_stages=2, expansion=2)
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model("s6_small", pretrained=True, in_chans=1)
    with pytest.raises(ValueError, match=r"S6 expects input \(batch, length, 8\)"):
        S6(8)(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="init_state"):
        S6(8).step(torch.randn(2, 8), {})
    with pytest.raises(RuntimeError, match="model.eval"):
        S6Block(8).train().step(torch.randn(2, 8), S6Block(8).init_state(2))


@pytest.mark.slow  # torch.compile of the whole model: ~15-40 s on 2 cores
def test_compiles_whole_and_equals_eager():
    """`torch.compile(fullgraph=True)` (AOTAutograd's trace) of an S6 model with padded lengths: no graph break, and
    the same outputs and gradients as eager (the scan is one custom op)."""
    torch.manual_seed(0)
    m = timm.create_model("s6_tiny", in_chans=3, num_classes=4)
    x, lengths = torch.randn(2, 24, 3), torch.tensor([24, 17])

    def run(model):
        m.zero_grad(set_to_none=True)
        out = model(x, lengths=lengths)
        out.sum().backward()
        return out.detach(), [q.grad.clone() for q in m.parameters()]

    eager, eager_grads = run(m)
    out, grads = run(torch.compile(m, fullgraph=True, backend="aot_eager"))
    torch.testing.assert_close(out, eager, rtol=0, atol=0)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
