"""The training engine: ``TrainConfig`` describes a run, ``train`` runs it (one process or DDP, exact resume),
``evaluate`` scores a checkpoint.

Modules: ``config`` (TrainConfig), ``recipes`` (the named recipes), ``optim`` (optimizer, schedule, learning
rate), ``tasks`` (one object per task: image, sequence, detection: its data, model, loss and evaluation),
``runtime`` (devices, DDP, autocast), ``samplers`` (seeded data order), ``rundir`` (a run folder's config,
metrics, curves and logs) and ``loop`` (the training loop and `evaluate`).
"""

from .config import TrainConfig
from .loop import RunResult, evaluate, train
from .rundir import plot_curves, read_metrics

__all__ = ["RunResult", "TrainConfig", "evaluate", "plot_curves", "read_metrics", "train"]
