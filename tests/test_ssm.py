import math

import pytest
import torch
import torch.nn.functional as F

from statelayers.layers.init import mamba_dt_bias, s4d_real_a_log
from statelayers.layers.selective import SelectiveParams, ssm_step


def test_a_log_is_log_1_to_n_broadcast():
    a = s4d_real_a_log(5, 3)
    assert a.shape == (3, 5)
    assert torch.allclose(a[2], torch.tensor([math.log(k) for k in range(1, 6)]))


@pytest.mark.parametrize("dt_min,dt_max", [(1e-3, 1e-1), (1e-2, 1.0)])
def test_dt_bias_inverts_softplus_into_the_log_uniform_range(dt_min, dt_max):
    g = torch.Generator().manual_seed(0)
    dt = F.softplus(mamba_dt_bias(20000, dt_min, dt_max, 1e-4, generator=g).double())
    assert dt.min() >= dt_min * (1 - 1e-4) and dt.max() <= dt_max * (1 + 1e-4)
    # log-uniform: the median is the geometric mean of the range
    assert math.isclose(dt.median().item(), math.sqrt(dt_min * dt_max), rel_tol=0.05)


def test_dt_floor_applies():
    dt = F.softplus(mamba_dt_bias(1000, 1e-6, 1e-5, dt_floor=1e-3).double())
    assert torch.allclose(dt, torch.full_like(dt, 1e-3), rtol=1e-4)


def test_dt_range_validation():
    with pytest.raises(ValueError, match="dt_min"):
        mamba_dt_bias(4, 0.1, 0.01)


def test_ssm_step_matches_float64_closed_form_over_many_steps():
    # constant Δ, B, u: h_T = a^T h0 + Δ·b·u·(1 - a^T)/(1 - a) with a = exp(ΔA)
    torch.manual_seed(0)
    n, steps = 16, 50
    A = -torch.arange(1, n + 1, dtype=torch.float64)
    delta = torch.rand(n, dtype=torch.float64) * 0.5 + 0.01
    b = torch.randn(n, dtype=torch.float64)
    u = torch.randn(n, dtype=torch.float64)
    h0 = torch.randn(n, dtype=torch.float64)
    a = torch.exp(delta * A)
    closed = a**steps * h0 + delta * b * u * (1 - a**steps) / (1 - a)
    h = h0.float()
    for _ in range(steps):
        terms = ssm_step(h, delta.float(), A.float(), b.float(), u.float())
        assert torch.allclose(terms.decay.double(), a * h.double(), rtol=1e-6)
        assert torch.allclose(terms.inject.double(), delta * b * u, rtol=1e-4, atol=1e-6)
        h = terms.h
    assert h.dtype == torch.float32
    assert torch.allclose(h.double(), closed, rtol=1e-5, atol=1e-6)


def test_ssm_step_runs_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    h = torch.randn(4, 8)
    delta = torch.rand(4, 8).bfloat16()
    A = -torch.arange(1, 9).float()
    b = torch.randn(4, 1).bfloat16()
    u = torch.randn(4, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ssm_step(h, delta, A, b, u).h
    ref = torch.exp(delta.double() * A.double()) * h.double() + delta.double() * b.double() * u.double()
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), ref, atol=1e-6)


def test_selective_params_shapes_and_positivity():
    p = SelectiveParams(d_in=12, d_delta=12, d_state=6, a_shape=(12, 6), dt_rank=3)
    z = torch.randn(5, 12)
    delta, b = p(z)
    assert delta.shape == (5, 12) and b.shape == (5, 6)
    assert (delta > 0).all()
    assert p.A.shape == (12, 6) and (p.A < 0).all()
    assert p.dt_down.weight.shape == (3, 12)


def test_selective_off_gives_input_independent_delta_and_b():
    p = SelectiveParams(8, 8, 8, selective=False)
    d1, b1 = p(torch.randn(3, 8))
    d2, b2 = p(torch.randn(3, 8) * 10)
    assert torch.equal(d1, d2) and torch.equal(b1, b2)
    assert torch.allclose(b1, torch.ones(3, 8))
    assert sum(t.numel() for t in p.parameters()) == 3 * 8


def test_reset_parameters_restores_mamba_init_after_generic_reinit():
    torch.manual_seed(0)
    p = SelectiveParams(8, 8, 8, dt_min=1e-2, dt_max=1.0)
    torch.nn.init.zeros_(p.dt_up.bias)  # what a generic backbone init would do
    p.A_log.data.zero_()
    p.reset_parameters()
    dt = F.softplus(p.dt_up.bias)
    assert (dt >= 1e-2 - 1e-6).all() and (dt <= 1.0 + 1e-6).all()
    assert torch.allclose(p.A_log, s4d_real_a_log(8))


def test_a_shape_must_end_in_d_state():
    with pytest.raises(ValueError, match="d_state"):
        SelectiveParams(4, 4, 8, a_shape=(4, 4))
