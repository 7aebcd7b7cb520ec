"""The SIMULATED double-pendulum task (statelayers.data.dynamics), against references computed here: energy
(from the bobs' Cartesian velocities) conserved without damping and drive within RK4's error bound, falling with
damping, and balanced by the work of damping and drive; the closed-form normal modes of small oscillations; the
task's alignment (targets, tau, gap channel) against the raw simulation; reproducibility and independence from the
run seed; the on-disk cache; the baselines against direct numpy computations and on exact linear motion."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from statelayers.data import dynamics as D
from statelayers.data.dynamics import (
    DoublePendulum,
    baseline_metrics,
    baseline_mse,
    build_double_pendulum,
    constant_velocity_prediction,
    last_value_prediction,
    pendulum_split,
    rk4_integrate,
    simulate_observations,
)

# unequal masses and lengths, so that a swapped index or a missing factor shows
ASYM = DoublePendulum(m1=1.3, m2=0.7, l1=1.1, l2=0.8, c1=0.0, c2=0.0, drive_amp=0.0)


def cartesian_energy(p: DoublePendulum, states: np.ndarray) -> np.ndarray:
    """½ m |v|² + m g y of both bobs, from positions and velocities written out here (not the module's T + V)."""
    th1, th2, w1, w2 = np.moveaxis(states, -1, 0)
    vx1, vy1 = p.l1 * np.cos(th1) * w1, p.l1 * np.sin(th1) * w1
    vx2, vy2 = vx1 + p.l2 * np.cos(th2) * w2, vy1 + p.l2 * np.sin(th2) * w2
    y1 = -p.l1 * np.cos(th1)
    y2 = y1 - p.l2 * np.cos(th2)
    return 0.5 * p.m1 * (vx1**2 + vy1**2) + 0.5 * p.m2 * (vx2**2 + vy2**2) + p.g * (p.m1 * y1 + p.m2 * y2)


def rk4_energy_bound(p: DoublePendulum, states: np.ndarray, h: float, n_steps: int) -> np.ndarray:
    """The bound on |E(t) − E(0)| after ``n_steps`` RK4 steps of ``h``, per trajectory: RK4's local error is the
    fifth-order Taylor remainder, ~ (ω h)⁵ / 5! of the state's scale per step, for the fastest rate ω of the motion
    (ω_c = max(|ω1|, |ω2|, sqrt(g / min(l1, l2))) over the trajectory); the energy moves by at most its range
    E_range = 2 g ((m1 + m2) l1 + m2 l2) times that per step, and the steps add up:

        |E(t) − E(0)| ≤ E_range · n_steps · (ω_c h)⁵ / 120.

    A third-order method would exceed it by ~5 / (ω_c h) (~100× here)."""
    w_c = np.maximum(np.abs(states[..., 2:]).max(axis=(0, 2)), np.sqrt(p.g / min(p.l1, p.l2)))
    e_range = 2 * p.g * ((p.m1 + p.m2) * p.l1 + p.m2 * p.l2)
    return e_range * n_steps * (w_c * h) ** 5 / 120


def initial_states(n: int, seed: int, theta: float = 2.5, omega: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(-theta, theta, (n, 2)), rng.uniform(-omega, omega, (n, 2))], axis=1)


# ----------------------------------------------------------------------------------------------- physics


def test_energy_is_conserved_within_the_rk4_bound_and_the_error_is_fourth_order():
    y0 = initial_states(8, seed=0)  # some trajectories go over the top (chaotic), some swing
    drifts = {}
    for h in (4e-3, 2e-3):
        n = int(round(3.0 / h))
        states = rk4_integrate(ASYM, y0, h, n)  # (n + 1, 8, 4)
        energy = cartesian_energy(ASYM, states)
        drift = np.abs(energy - energy[0]).max(axis=0)
        assert (drift <= rk4_energy_bound(ASYM, states, h, n)).all(), (h, drift)
        drifts[h] = drift.sum()
    # halving the step divides a fourth-order method's error by 16 (a third-order one: 8, a second-order one: 4)
    assert 12 < drifts[4e-3] / drifts[2e-3] < 40, drifts


def test_energy_falls_monotonically_with_damping():
    p = dataclasses.replace(ASYM, c1=0.3, c2=0.3)
    h, n = 2e-3, 1500
    states = rk4_integrate(p, initial_states(8, seed=1), h, n)
    energy = cartesian_energy(p, states)
    per_step = rk4_energy_bound(p, states, h, 1)  # the solver's own error in one step
    assert (np.diff(energy, axis=0) <= per_step).all()
    assert (energy[-1] < energy[0] - 0.1).all()  # and it does fall, by more than any error


def test_energy_changes_by_the_work_of_damping_and_drive():
    """E(T) − E(0) = ∫ P dt with P = −c1 ω1² − c2 (ω2 − ω1)² + A cos(Ω t) ω1 (Simpson's rule on the solver grid)."""
    p = dataclasses.replace(ASYM, c1=0.2, c2=0.15, drive_amp=1.5, drive_freq=2.3)
    h, n = 2e-3, 1500  # n even: Simpson
    states = rk4_integrate(p, initial_states(6, seed=2), h, n)
    t = np.arange(n + 1) * h
    w1, w2 = states[..., 2], states[..., 3]
    power = -p.c1 * w1**2 - p.c2 * (w2 - w1) ** 2 + p.drive_amp * np.cos(p.drive_freq * t)[:, None] * w1
    work = h / 3 * (power[0] + power[-1] + 4 * power[1:-1:2].sum(axis=0) + 2 * power[2:-1:2].sum(axis=0))
    energy = cartesian_energy(p, states)
    assert np.abs(energy[-1] - energy[0] - work).max() < 1e-5 * np.abs(work).max()
    # the drive does work, so a model that dropped it (or its sign) would be far off
    assert np.abs(work).max() > 0.5


def test_small_oscillations_follow_the_closed_form_normal_modes():
    """Linearised (sin θ ≈ θ, cos δ ≈ 1, no ω² terms), undamped and undriven: M0 θ̈ = −K θ with
    M0 = [[M l1², m2 l1 l2], [m2 l1 l2, m2 l2²]] and K = diag(M g l1, m2 g l2); det(K − ω² M0) = 0 gives
    m1 l1 l2 ω⁴ − M g (l1 + l2) ω² + M g² = 0, and the mode shapes v = (1, M (g − ω² l1) / (ω² m2 l2))."""
    p = ASYM
    m1, m2, l1, l2, g = p.m1, p.m2, p.l1, p.l2, p.g
    big_m = m1 + m2
    a, b, c = m1 * l1 * l2, -big_m * g * (l1 + l2), big_m * g * g
    w2 = np.array([(-b - np.sqrt(b * b - 4 * a * c)) / (2 * a), (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)])
    w = np.sqrt(w2)
    modes = np.stack([np.ones(2), big_m * (g - w2 * l1) / (w2 * m2 * l2)])  # columns: (θ1, θ2) of each mode
    amp = 1e-3
    th0, om0 = amp * np.array([0.6, -0.3]), amp * np.array([1.0, 0.5])
    cos_coef, sin_coef = np.linalg.solve(modes, th0), np.linalg.solve(modes, om0) / w
    h, n = 2e-3, 1500  # 3 s: more than one period of the slow mode, ~2.5 of the fast one
    t = np.arange(n + 1) * h
    linear = (np.cos(np.outer(t, w)) * cos_coef + np.sin(np.outer(t, w)) * sin_coef) @ modes.T  # (n + 1, 2)
    states = rk4_integrate(p, np.concatenate([th0, om0])[None], h, n)[:, 0]
    # what the linearisation drops is O(θ²) relative (~1e-6 per radian of phase at θ ~ 1e-3, over ω T ≈ 15 rad)
    assert np.abs(states[:, :2] - linear).max() < 1e-4 * amp


def test_observation_times_are_on_the_solver_grid_and_exact():
    """An observed state is the fixed-step solution at its time: integrating all steps and picking the observation
    indices gives the same numbers."""
    raw = simulate_observations(3, seed=7, n_obs=12)
    steps = raw["steps"]
    gaps = np.diff(steps, axis=1)
    assert steps[:, 0].tolist() == [0, 0, 0] and gaps.min() >= D.GAP_STEPS[0] and gaps.max() <= D.GAP_STEPS[1]
    assert np.array_equal(raw["times"], steps * D.SOLVER_DT)
    full = rk4_integrate(DoublePendulum(), raw["states"][:, 0], D.SOLVER_DT, int(steps.max()))
    for i in range(3):
        np.testing.assert_array_equal(raw["states"][i], full[steps[i], i])


# ----------------------------------------------------------------------------------------------- the task


# the task at a reduced size (everything else as built for the engine), its cache in a temporary folder
SMALL = dict(TRAIN_SIZE=48, EVAL_SIZE=24, N_STEPS=40)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        for name, value in SMALL.items():
            mp.setattr(D, name, value)
        train, evaluation, info = build_double_pendulum()
        yield train, evaluation, info, pendulum_split("train"), pendulum_split("eval")


def test_info_describes_a_simulated_next_step_regression(task):
    train, evaluation, info, _, _ = task
    assert info.simulated and "SIMULATED" in info.note and info.next_step and info.has_tau
    assert (info.target, info.target_dims, info.in_chans, info.num_classes) == ("step_regression", 6, 7, 0)
    assert info.target_names == ["x1", "y1", "x2", "y2", "omega1", "omega2"]
    assert (info.train_size, info.eval_size, info.max_len) == (len(train), len(evaluation), SMALL["N_STEPS"])
    assert (len(train), len(evaluation)) == (SMALL["TRAIN_SIZE"], SMALL["EVAL_SIZE"])


def test_targets_tau_and_gaps_line_up_with_the_raw_simulation(task):
    train, evaluation, _, raw_train, raw_eval = task
    mean, std = train.obs_mean, train.obs_std
    for ds, raw in ((train, raw_train), (evaluation, raw_eval)):
        for i in (0, 5, len(ds) - 1):
            item, target = ds[i]
            x, tau, y = item["x"].double().numpy(), item["tau"].double().numpy(), target.double().numpy()
            n = SMALL["N_STEPS"]
            assert x.shape == (n, 7) and y.shape == (n, 6) and tau.shape == (n,)
            # target[k] is the observation given as input at k + 1, and both are the raw o_{k+1}
            np.testing.assert_array_equal(y[:-1], x[1:, :6])
            np.testing.assert_allclose(x[:, :6] * std + mean, raw["obs"][i, :-1], atol=1e-5)
            np.testing.assert_allclose(y * std + mean, raw["obs"][i, 1:], atol=1e-5)
            # tau: the time since the previous observation (the first: the mean gap); the gap channel: to the next
            t = raw["times"][i]
            np.testing.assert_allclose(tau[1:] * D.TIME_UNIT, np.diff(t)[:-1], rtol=1e-6)
            assert tau[0] == 1.0 and (tau > 0).all()
            np.testing.assert_allclose(x[:, 6] * D.TIME_UNIT, np.diff(t), rtol=1e-6)
    # the observation is the bobs' positions: rods of lengths l1 and l2 (checks `observe` and the normalisation)
    o = raw_train["obs"]
    p = DoublePendulum()
    np.testing.assert_allclose(np.hypot(o[..., 0], o[..., 1]), p.l1, rtol=1e-12)
    np.testing.assert_allclose(np.hypot(o[..., 2] - o[..., 0], o[..., 3] - o[..., 1]), p.l2, rtol=1e-12)
    # z-scored with the training split's statistics: mean 0, std 1 over every training observation
    every = np.concatenate([train[i][0]["x"][:1, :6].numpy() for i in range(len(train))]
                           + [train[i][1].numpy() for i in range(len(train))])
    np.testing.assert_allclose(every.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(every.std(axis=0), 1.0, atol=1e-5)


def test_max_len_keeps_the_first_steps(task):
    train, evaluation, *_ = task
    short_train, short_eval, info = build_double_pendulum(max_len=10)
    assert info.max_len == 10
    for full, short in ((train, short_train), (evaluation, short_eval)):
        (item, y), (item_s, y_s) = full[3], short[3]
        assert item_s["x"].shape == (10, 7)
        assert np.array_equal(item_s["x"], item["x"][:10]) and np.array_equal(item_s["tau"], item["tau"][:10])
        assert np.array_equal(y_s, y[:10])


def test_same_arrays_every_time_and_independent_of_the_seed(task):
    train, evaluation, _, _, _ = task
    a, b = simulate_observations(6, seed=3, n_obs=20), simulate_observations(6, seed=3, n_obs=20)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(simulate_observations(6, seed=4, n_obs=20)["obs"], a["obs"])
    train5, eval5, _ = build_double_pendulum(seed=5)  # the seed picks a subset only: without one it changes nothing
    for ds, other in ((train, train5), (evaluation, eval5)):
        for i in (0, len(ds) // 2, len(ds) - 1):
            assert np.array_equal(ds[i][0]["x"], other[i][0]["x"]) and np.array_equal(ds[i][1], other[i][1])
    sub0, eval_sub, info = build_double_pendulum(subset=20, seed=0)
    sub1, _, _ = build_double_pendulum(subset=20, seed=1)
    assert len(sub0) == len(sub1) == info.train_size == 20 and len(eval_sub) == SMALL["EVAL_SIZE"]
    assert not np.array_equal(sub0.indices, sub1.indices)
    assert np.array_equal(sub0.indices, build_double_pendulum(subset=20, seed=0)[0].indices)
    for j in (0, 19):  # a subset's items are those of the full split
        assert np.array_equal(sub0[j][0]["x"], train[int(sub0.indices[j])][0]["x"])


def test_the_cache_is_keyed_written_and_replaced_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(D, "N_STEPS", 6)  # short trajectories: fast to generate
    fresh = pendulum_split("eval", n=4, cache=False)
    first = pendulum_split("eval", n=4)
    files = list((tmp_path / "statelayers").glob("double_pendulum-*.npz"))
    assert len(files) == 1 and not [p for p in files[0].parent.iterdir() if p.name.startswith(".tmp")]
    again = pendulum_split("eval", n=4)  # from the file
    for k in fresh:
        np.testing.assert_array_equal(first[k], fresh[k])
        np.testing.assert_array_equal(again[k], fresh[k])
    pendulum_split("eval", n=5)  # another parameter, another file
    assert len(list((tmp_path / "statelayers").glob("double_pendulum-*.npz"))) == 2
    files[0].write_bytes(b"not an npz file")
    np.testing.assert_array_equal(pendulum_split("eval", n=4)["obs"], fresh["obs"])
    np.testing.assert_array_equal(np.load(files[0])["states"], fresh["states"])  # rewritten


# ----------------------------------------------------------------------------------------------- the baselines


def direct_baselines(raw: dict, mean: np.ndarray, std: np.ndarray, length: int) -> dict[str, float]:
    """Both baselines' MSE from the raw arrays (seconds, physical units), normalised at the end."""
    o = raw["obs"][:, : length + 1]
    t = raw["times"][:, : length + 1]
    target = o[:, 1:]
    last = o[:, :-1]
    cv = last.copy()
    dt = np.diff(t, axis=1)  # dt[:, k] = t_{k+1} − t_k
    cv[:, 1:] += (o[:, 1:-1] - o[:, :-2]) * (dt[:, 1:] / dt[:, :-1])[..., None]
    return {"last_value": float(np.mean(((last - target) / std) ** 2)),
            "constant_velocity": float(np.mean(((cv - target) / std) ** 2))}


@pytest.mark.parametrize("max_len", [None, 7])
def test_baselines_match_a_direct_computation(task, max_len):
    train, evaluation, _, _, raw_eval = task
    ds = evaluation if max_len is None else build_double_pendulum(max_len=max_len)[1]
    want = direct_baselines(raw_eval, train.obs_mean, train.obs_std, max_len or SMALL["N_STEPS"])
    for kind in D.BASELINES:
        assert baseline_mse(ds, kind) == pytest.approx(want[kind], rel=1e-5)
    assert want["constant_velocity"] < want["last_value"]  # the motion is smooth at these gaps
    # the arrays form scores the same
    arrays = tuple(list(a) for a in zip(*[(ds[i][0]["x"].numpy(), ds[i][1].numpy(), ds[i][0]["tau"].numpy())
                                          for i in range(len(ds))]))
    for kind in D.BASELINES:
        assert baseline_mse(arrays, kind) == pytest.approx(baseline_mse(ds, kind), rel=1e-12)


def test_constant_velocity_is_exact_on_linear_motion():
    rng = np.random.default_rng(0)
    n, dims = 40, 3
    gaps = rng.uniform(0.2, 1.8, n + 1)  # Δ_1 … Δ_{n+1}, irregular
    t = np.concatenate([[0.0], np.cumsum(gaps)])
    start, velocity = rng.normal(size=dims), rng.normal(size=dims)
    o = start + np.outer(t, velocity)  # o(t) = a + v t: constant velocity, exactly
    x = np.concatenate([o[:n], gaps[:n, None]], axis=1)  # (o_k, Δ_{k+1})
    tau = np.concatenate([[1.0], gaps[: n - 1]])  # Δ_k (the first: the mean gap)
    target = o[1 : n + 1]
    pred = constant_velocity_prediction(x, tau, dims)
    np.testing.assert_allclose(pred[1:], target[1:], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(pred[0], o[0])  # ô_1 = o_0: no velocity yet
    np.testing.assert_array_equal(last_value_prediction(x, dims), o[:n])
    # the score: only the first step errs, by v Δ_1
    metrics = baseline_metrics(([x], [target], [tau]), "constant_velocity")
    assert metrics["mse"] == pytest.approx(np.sum((velocity * gaps[0]) ** 2) / (n * dims), rel=1e-9)
    assert metrics["mae"] == pytest.approx(np.sum(np.abs(velocity * gaps[0])) / (n * dims), rel=1e-9)
    assert baseline_mse(([x], [target], [tau]), "last_value") > 10 * metrics["mse"]


def test_baselines_skip_nan_padding_and_refuse_unknown_kinds():
    x = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    tau = np.ones(3)
    target = np.array([[1.0], [2.0], [np.nan]])  # the last step is padding
    assert baseline_mse(([x], [target], [tau]), "constant_velocity") == pytest.approx(0.5)  # (0 − 1)² / 2 steps
    with pytest.raises(ValueError, match="kind"):
        baseline_mse(([x], [target], [tau]), "oracle")
