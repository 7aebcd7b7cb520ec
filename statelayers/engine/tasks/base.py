"""What the engine asks of a task (image classification, sequence classification, detection): its data, its
model, how its batches go into the model, its loss and its evaluation. The training loop and `TrainConfig` ask
the task object; no other module of the engine tests the task's name.

Task methods take the run's resolved `TrainConfig` as ``cfg`` (it is not imported here: the config imports the
tasks to resolve itself) and the process's `statelayers.engine.runtime.Dist` as ``d``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, NamedTuple

import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from ..runtime import Dist

__all__ = ["Task", "TaskData", "call_model", "model_input_kind", "refuse_options"]

# the modules of statelayers whose registered timm models take sequences (keyword tensors x / tokens), not images
SEQUENCE_MODEL_MODULES = ("statelayers.models.s7_seq",)


class TaskData(NamedTuple):
    """A task's datasets and what they tell the rest of the run."""

    train: Dataset
    eval: Dataset
    info: Any  # the dataset's description (statelayers.data DataInfo / SeqInfo): name, classes, ...
    model_kwargs: dict  # what the data fixes in the model: num_classes, in_chans, ...
    collate: Callable | None  # the DataLoader's collate_fn (None: torch's default)


def call_model(model: nn.Module, batch):
    """Images go in positionally; sequence and detection batches (dicts of named inputs) as keywords."""
    return model(**batch) if isinstance(batch, dict) else model(batch)


def refuse_options(cfg, names: tuple[str, ...], why: str) -> None:
    """ValueError naming those of the options ``names`` that ``cfg`` sets, if any: "<names> <why>"."""
    unusable = [name for name in names if getattr(cfg, name)]
    if unusable:
        raise ValueError(f"{', '.join(unusable)} {why}")


def model_input_kind(name: str) -> str | None:
    """"sequence" for the sequence classifiers of `statelayers.models.s7_seq` (S7, S5, GRU), "image" for any other
    timm model (ours are registered on import), None for a name timm does not know."""
    import timm

    from ... import models  # noqa: F401  (registers the models with timm)

    if not isinstance(name, str) or not timm.is_model(name):
        return None
    module = getattr(timm.models.model_entrypoint(name), "__module__", "")
    return "sequence" if module in SEQUENCE_MODEL_MODULES else "image"


class Task(ABC):
    """One kind of run. Subclasses set ``name`` and implement the abstract methods."""

    name: str
    # the axis labels `statelayers.engine.rundir.plot_curves` gives this task's loss and accuracy
    curve_labels: dict[str, str] = {}

    @abstractmethod
    def default_recipe(self, model: str) -> str:
        """The recipe of a run that names none."""

    def checked_config(self, cfg):
        """``cfg`` (resolved) after the task's own checks: raises ValueError for options it cannot use."""
        return cfg

    @abstractmethod
    def build_data(self, cfg, *, eval_only: bool = False) -> TaskData:
        """The training and evaluation sets (``eval_only``: the training set is not subset)."""

    @abstractmethod
    def build_model(self, cfg, data_kwargs: dict, *, restoring: bool = False) -> nn.Module:
        """The model, sized by ``data_kwargs`` (`TaskData.model_kwargs`). ``restoring``: its weights will be
        replaced by a checkpoint of this run (resume, eval)."""

    def build_mixup(self, cfg, info):
        """A callable that mixes a batch and its targets (timm's Mixup / CutMix), or None."""
        return None

    def check_model_fits(self, model: nn.Module, info) -> None:
        """ValueError (one line) when the built model cannot be trained or scored on data ``info`` describes (e.g. a
        model that reads the future, on next-step targets). Every model fits by default."""
        return None

    @abstractmethod
    def build_loss(self, cfg, mixup, info=None) -> nn.Module:
        """The training loss: called as loss(model output, targets), on the targets ``mixup`` gives if any;
        ``info``: the data's description (`TaskData.info`)."""

    @abstractmethod
    def evaluate(self, model: nn.Module, loader: DataLoader, cfg, d: Dist, info=None) -> dict:
        """The metrics of ``model`` on the loader's data (described by ``info``), the same on every process; the one
        named by `score_metric` is what the run keeps its best checkpoint by."""

    def score_metric(self, info=None) -> tuple[str, bool]:
        """(the metric of `evaluate` the run keeps its best weights by, whether higher is better) for data
        ``info``."""
        return "eval_acc", True

    def evaluation_config(self, cfg, run_train_aug: dict | None):
        """The config to evaluate a run's checkpoint with, given that run's ``train_aug`` (None: no run folder
        or another dataset)."""
        return cfg

    @abstractmethod
    def epoch_summary(self, row: dict) -> str:
        """The evaluation part of the line printed after each epoch (``row``: the metrics.csv row)."""
