"""A run folder's files, apart from its checkpoints (`statelayers.checkpoint`): ``config.yaml`` (the resolved
config and figures of the run), ``metrics.csv`` (a row per epoch), ``curves.png``, TensorBoard logs under
``tb/`` and ``summary.yaml``; and the checksum of the weights that the processes of a run compare at the end.

pyyaml, matplotlib and tensorboard come with ``pip install "statelayers[train]"``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
from pathlib import Path

import torch
import torch.nn as nn

from .._extras import require
from ..checkpoint import CheckpointError, atomic_write_bytes
from .config import TrainConfig

__all__ = ["METRIC_FIELDS", "write_config", "read_config", "write_summary", "append_metrics", "read_metrics",
           "truncate_metrics", "plot_curves", "open_tensorboard", "weights_checksum"]

METRIC_FIELDS = ("epoch", "step", "lr", "train_loss", "eval_loss", "eval_acc", "eval_top5", "ema_eval_acc",
                 "images_per_s", "elapsed_s")


def _write_yaml(path: Path, data: dict) -> None:
    yaml = require("yaml", "the run folder's config.yaml and summary.yaml")
    atomic_write_bytes(path, yaml.safe_dump(data, sort_keys=False).encode())


def write_config(run_dir: Path, cfg: TrainConfig, extra: dict) -> None:
    """config.yaml: the fields of ``cfg`` and ``extra`` (figures of the run: world size, resolved lr, ...)."""
    data = {**dataclasses.asdict(cfg), **extra}
    data = {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()}
    _write_yaml(run_dir / "config.yaml", data)


def read_config(run_dir: Path) -> dict:
    """The run folder's config.yaml, as written by `write_config`."""
    yaml = require("yaml", "the run folder's config.yaml")
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run folder (no config.yaml)")
    return yaml.safe_load(path.read_text())


def write_summary(run_dir: Path, summary: dict) -> None:
    """summary.yaml: what a finished run measured."""
    _write_yaml(run_dir / "summary.yaml", summary)


def append_metrics(run_dir: Path, row: dict) -> None:
    """One row; the columns are METRIC_FIELDS then any other key of the first row (e.g. COCO metrics)."""
    path = run_dir / "metrics.csv"
    new = not path.exists()
    fields = list(METRIC_FIELDS) + [k for k in row if k not in METRIC_FIELDS]
    if not new:
        with open(path, newline="") as f:
            fields = next(csv.reader(f), None) or fields
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in fields})


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of the run folder's metrics.csv (values as strings); [] when there is none yet."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def truncate_metrics(run_dir: Path, upto_epoch: int) -> None:
    """Drop rows of epochs the resumed run will repeat."""
    rows = [r for r in read_metrics(run_dir) if int(r["epoch"]) < upto_epoch]
    path = run_dir / "metrics.csv"
    if path.exists():
        path.unlink()
    for r in rows:
        append_metrics(run_dir, r)


def plot_curves(runs: dict[str, list[dict]], path: str | Path, title: str = "", acc_label: str = "top-1 accuracy",
                loss_label: str = "cross-entropy") -> None:
    """Loss and accuracy against epoch, one line per run, written to `path` (PNG)."""
    matplotlib = require("matplotlib", "the plot of the training curves")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for label, rows in runs.items():
        ep = [int(r["epoch"]) + 1 for r in rows]
        ax_loss.plot(ep, [float(r["train_loss"]) for r in rows], marker="o", label=f"{label} train")
        if any(r.get("eval_loss") not in (None, "") for r in rows):  # detectors report no eval loss
            ax_loss.plot(ep, [float(r.get("eval_loss") or "nan") for r in rows], marker="x", linestyle="--",
                         label=f"{label} test")
        ax_acc.plot(ep, [float(r["eval_acc"]) for r in rows], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel=loss_label, title="loss")
    ax_acc.set(xlabel="epoch", ylabel=acc_label, title=f"test {acc_label}")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def open_tensorboard(run_dir: Path, purge_step: int | None):
    """A TensorBoard SummaryWriter logging to ``run_dir/tb`` (dropping what a resumed run logged after
    ``purge_step``), or None when tensorboard is not installed: the run then goes on without it."""
    try:
        tensorboard = require("torch.utils.tensorboard", "TensorBoard logging")
        return tensorboard.SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)
    except ImportError:
        return None


def weights_checksum(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in state_dict order."""
    h = hashlib.sha256()
    for t in model.state_dict().values():
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
