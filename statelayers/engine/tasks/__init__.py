"""The tasks the engine trains and evaluates, one object each: ``image`` (`ImageTask`), ``sequence``
(`SequenceTask`) and ``detection`` (`DetectionTask`). `infer_task` names the task of a dataset, `get_task` gives
its object; `build_data` and `build_model` are for callers that hold only a resolved config (benchmarks)."""

from __future__ import annotations

import torch.nn as nn

from .base import Task, TaskData, call_model
from .detection import DetectionTask
from .image import ImageTask
from .sequence import SequenceTask

__all__ = ["TASKS", "Task", "TaskData", "build_data", "build_model", "call_model", "get_task", "infer_task",
           "ImageTask", "SequenceTask", "DetectionTask"]

TASKS: dict[str, Task] = {task.name: task for task in (ImageTask(), SequenceTask(), DetectionTask())}


def infer_task(data: str) -> str:
    """"sequence" for the names and files `statelayers.data.sequences` reads, "detection" for a COCO-format folder
    (`statelayers.data.coco`), "image" otherwise."""
    from ...data.coco import is_coco_folder
    from ...data.sequences import is_sequence_data

    if is_coco_folder(data):
        return "detection"

    return "sequence" if is_sequence_data(data) else "image"


def get_task(name: str) -> Task:
    """The task object of ``name`` ("image", "sequence" or "detection")."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {name!r}")
    return TASKS[name]


def build_data(cfg, *, eval_only: bool = False) -> TaskData:
    """The datasets of a resolved config's task (`Task.build_data`)."""
    return get_task(cfg.task).build_data(cfg, eval_only=eval_only)


def build_model(cfg, data_kwargs: dict, *, restoring: bool = False) -> nn.Module:
    """The model of a resolved config's task (`Task.build_model`)."""
    return get_task(cfg.task).build_model(cfg, data_kwargs, restoring=restoring)
