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
import re
import socket
import time
from pathlib import Path

import torch
import torch.nn as nn

from .._extras import require
from ..checkpoint import CheckpointError, atomic_write_bytes
from .config import TrainConfig

__all__ = ["METRIC_FIELDS", "check_run_dir_free", "claim_run_dir", "default_run_name", "write_config", "read_config",
           "write_summary", "append_metrics", "read_metrics", "truncate_metrics", "plot_curves", "open_tensorboard",
           "weights_checksum"]

METRIC_FIELDS = ("epoch", "step", "lr", "train_loss", "eval_loss", "eval_acc", "eval_top5", "ema_eval_acc",
                 "images_per_s", "elapsed_s")


# created with O_EXCL in a new run folder: whoever creates it owns the folder
OWNER_FILE = ".owner"


def default_run_name(model: str, data: str) -> str:
    """``MODEL-DATA-YYYYmmdd-HHMMSS``, made a single safe folder name (a timm hub model name has slashes)."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", f"{model}-{data}-{time.strftime('%Y%m%d-%H%M%S')}")


def _claim(path: Path) -> bool:
    """Make ``path`` this process's run folder, atomically: True when it was created here, or existed empty and no
    other process claimed it first (the owner file is created with O_EXCL); False when it is taken or not empty."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if not path.is_dir() or any(path.iterdir()):
            return False
    try:
        fd = os.open(path / OWNER_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{socket.gethostname()} {os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    return True


def _move_aside(path: Path) -> Path:
    """Rename the folder ``path`` to ``NAME.old-<time>[-k]`` beside it (a rename: nothing is copied or deleted)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        aside = path.with_name(f"{path.name}.old-{stamp}" + (f"-{k}" if k else ""))
        if aside.exists():
            continue
        try:
            os.rename(path, aside)  # onto an existing non-empty folder this fails rather than replaces
            return aside
        except OSError:
            if not aside.exists():
                raise
    raise FileExistsError(f"no free name to move {path} aside")


def _refused(path: Path) -> ValueError:
    return ValueError(f"run folder {path} already exists and is not empty: continue it with --resume {path}, "
                      "or start it again with --overwrite (which keeps the old folder as NAME.old-<time>)")


def check_run_dir_free(output: str | Path, name: str | None, *, overwrite: bool = False) -> None:
    """Refuse early (before the data and model are built) a ``name`` that `claim_run_dir` would refuse; the claim
    itself, later, is what decides."""
    if name is None or overwrite:
        return
    path = Path(output) / name
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise _refused(path)


def claim_run_dir(output: str | Path, name: str | None, default: str, *, overwrite: bool = False,
                  quiet: bool = False) -> Path:
    """Create the folder of a new run under ``output``, atomically, so that no two runs ever share one.

    An explicit ``name`` whose folder exists and is not empty is refused (ValueError), unless ``overwrite``: then
    the old folder is renamed to ``NAME.old-<time>`` (kept whole, never deleted) and a fresh one created. Without
    a name, ``default`` is used, with the first free suffix -1, -2, ... when another run (another process started
    in the same second) holds it."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    if name is not None:
        path = out / name
        if _claim(path):
            return path
        if not overwrite:
            raise _refused(path)
        aside = _move_aside(path)
        if not quiet:
            print(f"--overwrite: moved the old run folder {path} to {aside}", flush=True)
        if not _claim(path):
            raise ValueError(f"run folder {path} was taken by another run while moving the old one aside")
        return path
    for k in range(10000):
        path = out / (default if k == 0 else f"{default}-{k}")
        if _claim(path):
            return path
    raise FileExistsError(f"no free run folder name {default}-N under {out}")


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
