"""SIMULATED dynamical-system prediction: a damped, driven double pendulum observed at irregular times, and the
next-observation task built on it (the task of the Walker2d benchmark of ODE-LSTM, Lechner & Hasani 2020, on a
system we can simulate offline, since no recorded data installs here).

**The system** (:class:`DoublePendulum`): two point masses ``m1``, ``m2`` on massless rigid rods of lengths ``l1``,
``l2``; the first rod hangs from a fixed pivot, the second from the first mass. State ``(θ1, θ2, ω1, ω2)``: the
rods' angles from the downward vertical (counter-clockwise positive) and their rates. Viscous damping acts at both
joints — ``c1`` against the first rod's rotation, ``c2`` against the *relative* rotation of the two rods — and a
sinusoidal torque ``A cos(Ω t)`` drives the first joint. With ``δ = θ1 − θ2`` and ``M = m1 + m2``, Lagrange's
equations with the generalised forces ``Q`` of damping and drive read::

    M l1² θ̈1 + m2 l1 l2 cos δ θ̈2 = −m2 l1 l2 ω2² sin δ − M g l1 sin θ1 + Q1
    m2 l1 l2 cos δ θ̈1 + m2 l2² θ̈2 = +m2 l1 l2 ω1² sin δ − m2 g l2 sin θ2 + Q2
    Q1 = −c1 ω1 + c2 (ω2 − ω1) + A cos(Ω t),     Q2 = −c2 (ω2 − ω1)

(Q = −∂R/∂ω of the dissipation function R = ½ c1 ω1² + ½ c2 (ω2 − ω1)², plus the drive). The 2×2 mass matrix has
determinant m2 l1² l2² (m1 + m2 sin² δ) > 0 and is solved in closed form (:meth:`DoublePendulum.derivative`). The
energy E = T + V (:meth:`DoublePendulum.energy`) changes at the rate dE/dt = Q1 ω1 + Q2 ω2 = −c1 ω1² −
c2 (ω2 − ω1)² + A cos(Ω t) ω1 (:meth:`DoublePendulum.power`): conserved without damping and drive, decreasing with
damping alone.

**The solver** (:func:`rk4_integrate`): classical fourth-order Runge–Kutta with a fixed step :data:`SOLVER_DT`
(2 ms), vectorised over trajectories in numpy (float64). Observation times lie *on the solver grid*: each gap
between observations is a whole number of solver steps, drawn uniformly from :data:`GAP_STEPS` (10–90 steps,
0.02–0.18 s, mean 0.1 s), so an observed state is exactly the fixed-step solution at that time (no interpolation).

**The observation** ``o`` (D = 6, :data:`OBS_NAMES`): the Cartesian positions of both bobs ``x1, y1, x2, y2`` (m;
unlike the angles they do not wrap) and the angular velocities ``ω1, ω2`` (rad/s).

**The task** (:func:`build_double_pendulum`, data name ``double_pendulum``): each trajectory has
:data:`N_STEPS` + 1 = 101 observations ``o_0 … o_100`` at times ``t_0 = 0 < t_1 < …``. Step ``k`` (0 ≤ k < 100) gets
``x_k = (o_k, Δ_{k+1})`` — the observation and the time to the *next* observation, ``Δ_{k+1} = t_{k+1} − t_k``
(C = D + 1 = 7 channels) — and ``tau_k = Δ_k``, the time since the previous observation (``tau_0``: the mean
gap); its target is ``o_{k+1}``. So ``target[k]`` is the observation part of ``x[k + 1]``.

Units: the observation channels (inputs and targets alike) are z-scored per channel with the mean and standard
deviation of every observation of the full training split (not of a subset: the numbers are the same for every
run); errors (MSE, MAE) are therefore in these normalised units. Time (``tau`` and the gap channel) is in units of
the mean gap, :data:`TIME_UNIT` = 0.1 s, so ``tau`` averages 1, the unit step S7's discretisation is initialised
for; the gap channel is scaled, not centred.

Baselines in the same units (:func:`last_value_prediction`, :func:`constant_velocity_prediction`,
:func:`baseline_mse`): the last value ``ô_{k+1} = o_k`` and constant velocity
``ô_{k+1} = o_k + (o_k − o_{k−1}) Δ_{k+1} / Δ_k`` (``ô_1 = o_0``); both are affine-equivariant, so they are the
same whether computed before or after the per-channel normalisation.

Sizes: :data:`TRAIN_SIZE` = 512 and :data:`EVAL_SIZE` = 256 trajectories of 100 steps, generated from the fixed
seeds in :data:`DATA_SEEDS` (so the data are the same for every run seed; ``seed`` only picks ``subset``).
Generating both splits takes ~4 s of one CPU core (2.3 s + 1.3 s, measured on the busy 2-core machine), which
every run and every estimate would pay, so they are cached on disk (:func:`pendulum_split`); from the cache
:func:`build_double_pendulum` takes ~0.06 s.

Accuracy: on the evaluation split, a solution with a quarter of the step (0.5 ms) differs from the data by at most
2.1e-3 in any observation channel (m or rad/s; 9.5e-4 in normalised units, against constant-velocity errors of
~0.28), by less than 4.4e-5 in 99% of the trajectories, and by 8e-9 in the median one.

Reproducibility: the arrays are a function of the parameters above and of numpy's float64 arithmetic only, so they
are bitwise the same on one machine and numpy build (the cache's name includes numpy's version). A build whose
``sin``/``cos`` round differently (another SIMD path) may give slightly different numbers, which the few
trajectories that move chaotically amplify over their 10 s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..checkpoint import atomic_write_bytes
from .sequence_base import SeqInfo, SequenceSets, StepSequenceDataset, apply_subset, check_max_len

__all__ = [
    "BASELINES",
    "DATA_SEEDS",
    "EVAL_SIZE",
    "GAP_STEPS",
    "N_STEPS",
    "OBS_NAMES",
    "SOLVER_DT",
    "TIME_UNIT",
    "TRAIN_SIZE",
    "DoublePendulum",
    "baseline_metrics",
    "baseline_mse",
    "build_double_pendulum",
    "cache_dir",
    "constant_velocity_prediction",
    "last_value_prediction",
    "observe",
    "pendulum_split",
    "rk4_integrate",
    "rk4_step",
    "simulate_observations",
]

SOLVER_DT = 2e-3  # s: the fixed RK4 step
GAP_STEPS = (10, 90)  # gaps between observations: uniform over these many solver steps, ends included (0.02-0.18 s)
MEAN_GAP_STEPS = (GAP_STEPS[0] + GAP_STEPS[1]) / 2  # 50 solver steps
TIME_UNIT = SOLVER_DT * MEAN_GAP_STEPS  # 0.1 s, the mean gap: the unit of tau and of the gap channel
N_STEPS = 100  # prediction steps per trajectory (N_STEPS + 1 observations)
TRAIN_SIZE, EVAL_SIZE = 512, 256  # one epoch of s7_small: ~20 s on one busy CPU thread (batch 32)
DATA_SEEDS = {"train": 0, "eval": 1}  # fixed: the data are the same for every run seed
# initial conditions: both angles uniform in ±THETA0_MAX rad, both rates uniform in ±OMEGA0_MAX rad/s. Measured on the
# training split: 5.5% of the trajectories go over the top (an angle beyond ±π) at some time, the others swing at
# large, then (damping against the drive) moderate amplitudes; the energy falls from a median of −11.9 J at t = 0 to
# −24.6 J at the last observation (−29.4 J is rest)
THETA0_MAX, OMEGA0_MAX = 2.0, 2.0
OBS_NAMES = ("x1", "y1", "x2", "y2", "omega1", "omega2")
BASELINES = ("last_value", "constant_velocity")


@dataclass(frozen=True)
class DoublePendulum:
    """A damped, driven double pendulum (see the module docstring for the equations). SI units: kg, m, s, N·m·s
    (damping), N·m (drive amplitude), rad/s (drive frequency)."""

    m1: float = 1.0
    m2: float = 1.0
    l1: float = 1.0
    l2: float = 1.0
    g: float = 9.81
    c1: float = 0.1  # viscous damping of the pivot joint (against ω1)
    c2: float = 0.1  # viscous damping of the middle joint (against ω2 − ω1)
    drive_amp: float = 2.0  # A: torque amplitude on the pivot joint
    drive_freq: float = 2.0  # Ω: near the lower normal mode (2.40 rad/s with the defaults), below the upper (5.79)

    def drive(self, t: float | np.ndarray) -> float | np.ndarray:
        """The torque on the pivot joint at time ``t``: ``A cos(Ω t)``."""
        return self.drive_amp * np.cos(self.drive_freq * t)

    def forces(self, t: float, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The generalised forces ``(Q1, Q2)`` of damping and drive on a ``(4, ...)`` state."""
        w1, w2 = state[2], state[3]
        rel = self.c2 * (w2 - w1)  # the middle joint's damping torque, +rel on rod 1 and −rel on rod 2
        return -self.c1 * w1 + rel + self.drive(t), -rel

    def derivative(self, t: float, state: np.ndarray) -> np.ndarray:
        """``d state / dt`` for a ``(4, ...)`` array of states ``(θ1, θ2, ω1, ω2)`` (trajectories along the other
        axes): the equations of motion solved for ``(θ̈1, θ̈2)`` by Cramer's rule."""
        th1, th2, w1, w2 = state
        m1, m2, l1, l2, g = self.m1, self.m2, self.l1, self.l2, self.g
        big_m = m1 + m2
        # one sin over (θ1, θ2, δ) and one cos over δ: few numpy calls, as the solver calls this 4 times a step
        d = th1 - th2
        sin_1, sin_2, sin_d = np.sin(np.stack([th1, th2, d]))
        cos_d = np.cos(d)
        q1, q2 = self.forces(t, state)
        # M(θ) θ̈ = b: the symmetric mass matrix [[a11, a12], [a12, a22]] and the right-hand side b
        a11, a12, a22 = big_m * l1 * l1, (m2 * l1 * l2) * cos_d, m2 * l2 * l2
        b1 = (-m2 * l1 * l2) * (w2 * w2 * sin_d) - (big_m * g * l1) * sin_1 + q1
        b2 = (m2 * l1 * l2) * (w1 * w1 * sin_d) - (m2 * g * l2) * sin_2 + q2
        det = (m2 * l1 * l1 * l2 * l2) * (m1 + m2 * sin_d * sin_d)  # a11 a22 − a12², > 0 for every δ
        return np.stack([w1, w2, (b1 * a22 - a12 * b2) / det, (a11 * b2 - a12 * b1) / det])

    def energy(self, state: np.ndarray) -> np.ndarray:
        """Kinetic plus potential energy (J, zero potential at the pivot's height) of a ``(4, ...)`` state."""
        th1, th2, w1, w2 = state
        m1, m2, l1, l2, g = self.m1, self.m2, self.l1, self.l2, self.g
        kinetic = 0.5 * (m1 + m2) * (l1 * w1) ** 2 + 0.5 * m2 * (l2 * w2) ** 2 \
            + m2 * l1 * l2 * w1 * w2 * np.cos(th1 - th2)
        potential = -(m1 + m2) * g * l1 * np.cos(th1) - m2 * g * l2 * np.cos(th2)
        return kinetic + potential

    def power(self, t: float, state: np.ndarray) -> np.ndarray:
        """dE/dt = Q1 ω1 + Q2 ω2 (W): what damping and drive do to the energy."""
        q1, q2 = self.forces(t, state)
        return q1 * state[2] + q2 * state[3]


def observe(pendulum: DoublePendulum, state: np.ndarray) -> np.ndarray:
    """The observation of a ``(..., 4)`` state: ``(..., 6)`` = bob positions x1, y1, x2, y2 (m; y up, the pivot at
    the origin) and ω1, ω2 (rad/s), as :data:`OBS_NAMES`."""
    th1, th2, w1, w2 = np.moveaxis(state, -1, 0)
    x1, y1 = pendulum.l1 * np.sin(th1), -pendulum.l1 * np.cos(th1)
    x2, y2 = x1 + pendulum.l2 * np.sin(th2), y1 - pendulum.l2 * np.cos(th2)
    return np.stack([x1, y1, x2, y2, w1, w2], axis=-1)


# ----------------------------------------------------------------------------------------------- the solver


def rk4_step(f: Callable[[float, np.ndarray], np.ndarray], t: float, y: np.ndarray, h: float) -> np.ndarray:
    """One classical Runge–Kutta step of ``dy/dt = f(t, y)`` from ``(t, y)`` over ``h``."""
    k1 = f(t, y)
    k2 = f(t + 0.5 * h, y + (0.5 * h) * k1)
    k3 = f(t + 0.5 * h, y + (0.5 * h) * k2)
    k4 = f(t + h, y + h * k3)
    return y + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def rk4_integrate(pendulum: DoublePendulum, y0: np.ndarray, h: float, n_steps: int,
                  record_steps: np.ndarray | None = None) -> np.ndarray:
    """Integrate ``N`` trajectories from ``y0`` (``(N, 4)``, at t = 0) with ``n_steps`` fixed RK4 steps of ``h``.

    ``record_steps`` None: every state, ``(n_steps + 1, N, 4)`` (index n = time n·h). Otherwise an int array
    ``(N, K)`` of increasing grid indices in ``[0, n_steps]`` per trajectory: the states at those indices,
    ``(N, K, 4)`` — trajectory i's k-th record is the solution at time ``record_steps[i, k]·h``."""
    y = np.array(np.asarray(y0, dtype=np.float64).T)  # (4, N): the state's components as contiguous rows
    n = y.shape[1]
    if record_steps is None:
        out = np.empty((n_steps + 1, n, 4))
        out[0] = y.T
        for step in range(1, n_steps + 1):
            # the time is step·h, not a running sum, so that the drive's phase does not drift with rounding
            y = rk4_step(pendulum.derivative, (step - 1) * h, y, h)
            out[step] = y.T
        return out
    record_steps = np.asarray(record_steps, dtype=np.int64)
    if record_steps.ndim != 2 or record_steps.shape[0] != n:
        raise ValueError(f"record_steps must be (N={n}, K), got {record_steps.shape}")
    if record_steps.size and (record_steps.min() < 0 or record_steps.max() > n_steps
                              or (np.diff(record_steps, axis=1) <= 0).any()):
        raise ValueError(f"record_steps must increase along each row within [0, {n_steps}]")
    out = np.empty(record_steps.shape + (4,))
    # every record in the order of its grid index: those of step s are order[bounds[s]:bounds[s + 1]]
    flat = record_steps.ravel()
    order = np.argsort(flat, kind="stable")
    rows, cols = np.divmod(order, record_steps.shape[1])
    bounds = np.searchsorted(flat[order], np.arange(n_steps + 2))
    for step in range(n_steps + 1):
        if step:
            y = rk4_step(pendulum.derivative, (step - 1) * h, y, h)
        lo, hi = bounds[step], bounds[step + 1]
        if hi > lo:
            out[rows[lo:hi], cols[lo:hi]] = y[:, rows[lo:hi]].T
    return out


# ----------------------------------------------------------------------------------------------- the data


def simulate_observations(n: int, seed: int, *, n_obs: int = N_STEPS + 1,
                          pendulum: DoublePendulum | None = None) -> dict[str, np.ndarray]:
    """``n`` trajectories observed ``n_obs`` times at irregular times, from random initial conditions.

    Returns raw (unnormalised) arrays: ``"steps"`` int64 ``(n, n_obs)``, the solver-grid index of each observation
    (``0`` first), ``"times"`` ``(n, n_obs)`` = steps · :data:`SOLVER_DT` (s), ``"states"`` ``(n, n_obs, 4)`` and
    ``"obs"`` ``(n, n_obs, 6)`` (:func:`observe`), float64. Everything random comes from
    ``np.random.default_rng(seed)``: the initial conditions first, then the gaps."""
    pendulum = pendulum or DoublePendulum()
    rng = np.random.default_rng(seed)
    y0 = np.concatenate([rng.uniform(-THETA0_MAX, THETA0_MAX, (n, 2)), rng.uniform(-OMEGA0_MAX, OMEGA0_MAX, (n, 2))],
                        axis=1)
    gaps = rng.integers(GAP_STEPS[0], GAP_STEPS[1] + 1, size=(n, n_obs - 1))  # in solver steps
    steps = np.concatenate([np.zeros((n, 1), dtype=np.int64), np.cumsum(gaps, axis=1)], axis=1)
    states = rk4_integrate(pendulum, y0, SOLVER_DT, int(steps[:, -1].max()), record_steps=steps)
    return _raw(steps, states, pendulum)


def _raw(steps: np.ndarray, states: np.ndarray, pendulum: DoublePendulum) -> dict[str, np.ndarray]:
    return {"steps": steps, "times": steps * SOLVER_DT, "states": states, "obs": observe(pendulum, states)}


# the cached splits: bump when what a cache file holds, or how it is generated, changes
CACHE_FORMAT = 1


def cache_dir() -> Path:
    """Where generated splits are kept: ``$XDG_CACHE_HOME/statelayers`` (default ``~/.cache/statelayers``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "statelayers"


def _cache_key(n: int, seed: int, n_obs: int, pendulum: DoublePendulum) -> str:
    """A name for the split generated from these parameters: every input of the generation, and numpy's version
    (its trigonometric functions may round differently from one release or CPU to the next)."""
    params = dict(format=CACHE_FORMAT, n=n, seed=seed, n_obs=n_obs, pendulum=dataclasses.asdict(pendulum),
                  solver_dt=SOLVER_DT, gap_steps=GAP_STEPS, theta0_max=THETA0_MAX, omega0_max=OMEGA0_MAX,
                  numpy=np.__version__)
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return f"double_pendulum-n{n}-s{seed}-{digest}.npz"


def pendulum_split(split: str, n: int | None = None, *, cache: bool = True) -> dict[str, np.ndarray]:
    """The raw arrays of a split of the task (``"train"`` or ``"eval"``; ``n`` trajectories, the split's size by
    default), as :func:`simulate_observations` returns them, from the split's fixed seed.

    Generating the training split takes ~2.5 s of one CPU core, so with ``cache`` the arrays are kept in
    :func:`cache_dir` under a name made of every generation parameter (written atomically; an unreadable or
    mismatching file is generated again, and an unwritable folder only costs the time)."""
    if split not in DATA_SEEDS:
        raise ValueError(f"split must be one of {tuple(DATA_SEEDS)}, got {split!r}")
    size = {"train": TRAIN_SIZE, "eval": EVAL_SIZE}[split] if n is None else int(n)
    seed, n_obs, pendulum = DATA_SEEDS[split], N_STEPS + 1, DoublePendulum()
    path = cache_dir() / _cache_key(size, seed, n_obs, pendulum)
    if cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                steps, states = f["steps"], f["states"]
            if steps.shape == (size, n_obs) and states.shape == (size, n_obs, 4) and steps.dtype == np.int64:
                return _raw(steps, states, pendulum)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # a damaged file: generate the split again and replace it
    raw = simulate_observations(size, seed, n_obs=n_obs, pendulum=pendulum)
    if cache:
        buf = io.BytesIO()
        np.savez(buf, steps=raw["steps"], states=raw["states"])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buf.getvalue())
        except OSError:
            pass
    return raw


def _task_arrays(raw: dict[str, np.ndarray], mean: np.ndarray, std: np.ndarray
                 ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Raw trajectories → the task's (inputs, targets, tau) per trajectory, in normalised units."""
    obs = (raw["obs"] - mean) / std  # (N, K, D)
    gaps = np.diff(raw["steps"], axis=1) / MEAN_GAP_STEPS  # (N, K − 1): Δ_1 … Δ_{K−1}, in units of the mean gap
    gap_next = gaps  # step k's time to the next observation: Δ_{k+1}
    tau = np.concatenate([np.ones((len(gaps), 1)), gaps[:, :-1]], axis=1)  # Δ_k; the first: the mean gap (1 unit)
    inputs = np.concatenate([obs[:, :-1], gap_next[..., None]], axis=2)  # (N, K − 1, D + 1)
    targets = obs[:, 1:]  # o_{k+1}
    return list(inputs), list(targets), list(tau)


def build_double_pendulum(subset: int | None = None, seed: int = 0, max_len: int | None = None) -> SequenceSets:
    """(train, eval, info) of the SIMULATED double-pendulum next-observation task (see the module docstring).

    ``subset=K``: K training trajectories drawn at random (seeded by ``seed``); ``max_len``: keep the first steps
    of every trajectory. The datasets carry ``obs_mean`` / ``obs_std`` (the normalisation of the observation
    channels, raw = normalised · std + mean) and ``time_unit`` (s)."""
    max_len = check_max_len(max_len)
    raw_train, raw_eval = pendulum_split("train"), pendulum_split("eval")
    flat = raw_train["obs"].reshape(-1, raw_train["obs"].shape[-1])
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    sets = []
    for raw in (raw_train, raw_eval):
        ds = StepSequenceDataset(*_task_arrays(raw, mean, std), max_len=max_len)
        ds.obs_mean, ds.obs_std, ds.time_unit = mean, std, TIME_UNIT
        sets.append(ds)
    train, evaluation = sets
    train = apply_subset(train, subset, seed, 0)
    length = N_STEPS if max_len is None else min(N_STEPS, max_len)
    info = SeqInfo(
        name="double_pendulum", num_classes=0, input_kind="dense", in_chans=len(OBS_NAMES) + 1, max_len=length,
        train_size=len(train), eval_size=len(evaluation), has_tau=True, simulated=True,
        note=(f"SIMULATED damped, driven double pendulum (RK4, fixed step {SOLVER_DT * 1e3:g} ms), observed at "
              f"irregular times (gaps uniform {GAP_STEPS[0] * SOLVER_DT:g}-{GAP_STEPS[1] * SOLVER_DT:g} s): "
              f"predict the next observation (x1, y1, x2, y2, omega1, omega2; z-scored with the training split's "
              f"statistics) from the current one and the time to the next (in units of {TIME_UNIT:g} s, as tau); "
              f"{TRAIN_SIZE} / {EVAL_SIZE} trajectories of {N_STEPS} steps, the same for every seed"),
        target="step_regression", target_dims=len(OBS_NAMES), target_names=list(OBS_NAMES), next_step=True)
    return train, evaluation, info


# ----------------------------------------------------------------------------------------------- the baselines


def last_value_prediction(x: np.ndarray, dims: int = len(OBS_NAMES)) -> np.ndarray:
    """The last-value prediction ``ô_{k+1} = o_k`` of every step of one sequence: ``x`` ``(L, C)`` whose first
    ``dims`` channels are the observation → ``(L, dims)``."""
    return np.array(np.asarray(x)[:, :dims], dtype=np.float64)


def constant_velocity_prediction(x: np.ndarray, tau: np.ndarray, dims: int = len(OBS_NAMES)) -> np.ndarray:
    """The constant-velocity prediction ``ô_{k+1} = o_k + (o_k − o_{k−1}) Δ_{k+1} / Δ_k`` of every step of one
    sequence (``ô_1 = o_0``: the first step has no velocity): ``x`` ``(L, C)`` holds the observation in its first
    ``dims`` channels and the time to the next observation ``Δ_{k+1}`` in channel ``dims``; ``tau`` ``(L,)`` the
    time since the previous ``Δ_k`` (in the same unit) → ``(L, dims)``."""
    x = np.asarray(x, dtype=np.float64)
    tau = np.asarray(tau, dtype=np.float64)
    obs, gap_next = x[:, :dims], x[:, dims]
    pred = obs.copy()
    ratio = gap_next[1:] / tau[1:]
    pred[1:] += (obs[1:] - obs[:-1]) * ratio[:, None]
    return pred


def _as_triples(data: Dataset | tuple) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(x, tau, target) numpy arrays per sequence, from a dataset of ``({"x", "tau"}, target)`` items or from the
    three lists ``(inputs, targets, tau)`` that :class:`StepSequenceDataset` is built from."""
    if isinstance(data, tuple):
        if len(data) != 3:
            raise ValueError(f"arrays must be the tuple (inputs, targets, tau), got a tuple of {len(data)}")
        inputs, targets, tau = data
        return [(np.asarray(u), np.asarray(t), np.asarray(y)) for u, y, t in zip(inputs, targets, tau)]
    out = []
    for i in range(len(data)):
        item, target = data[i]
        out.append((item["x"].numpy(), item["tau"].numpy(), np.asarray(target)))
    return out


def baseline_metrics(data: Dataset | tuple, kind: str) -> dict[str, float]:
    """The baseline ``kind`` (``"last_value"`` or ``"constant_velocity"``) scored on ``data`` (a dataset of this
    task, e.g. the evaluation split as the engine sees it, or the lists ``(inputs, targets, tau)``): ``{"mse",
    "rmse", "mae"}``, means over every step and every dimension of all sequences together (NaN targets, the
    padding, are skipped) — the engine's ``eval_mse`` / ``eval_rmse`` / ``eval_mae`` of a model."""
    if kind not in BASELINES:
        raise ValueError(f"kind must be one of {BASELINES}, got {kind!r}")
    sq, ab, count = 0.0, 0.0, 0
    for x, tau, target in _as_triples(data):
        target = np.asarray(target, dtype=np.float64).reshape(len(x), -1)
        dims = target.shape[1]
        pred = last_value_prediction(x, dims) if kind == "last_value" else constant_velocity_prediction(x, tau, dims)
        err = (pred - target)[~np.isnan(target)]
        sq += float(np.sum(err * err))
        ab += float(np.sum(np.abs(err)))
        count += err.size
    if count == 0:
        raise ValueError("no steps to score")
    return {"mse": sq / count, "rmse": float(np.sqrt(sq / count)), "mae": ab / count}


def baseline_mse(data: Dataset | tuple, kind: str) -> float:
    """The per-step MSE of baseline ``kind`` on ``data`` (see :func:`baseline_metrics`), the quantity the engine
    reports as ``eval_mse``."""
    return baseline_metrics(data, kind)["mse"]
