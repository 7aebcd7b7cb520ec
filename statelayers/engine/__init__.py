"""The training engine: ``TrainConfig`` describes a run, ``train`` runs it (one process or DDP, exact resume),
``evaluate`` scores a checkpoint."""

from .loop import RunResult, TrainConfig, evaluate, plot_curves, read_metrics, train

__all__ = ["RunResult", "TrainConfig", "evaluate", "plot_curves", "read_metrics", "train"]
