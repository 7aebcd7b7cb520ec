"""A run folder's files, apart from its checkpoints (`statelayers.checkpoint`): ``config.yaml`` (the resolved
config and figures of the run), ``metrics.csv`` (a row per epoch), ``curves.png``, TensorBoard logs under
``tb/`` and ``summary.yaml``; the folder's claim (``.owner``) and lock (``.lock``); and the checksum of the weights
that the processes of a run compare at the end.

Every file is replaced whole (written under a ``.tmp-`` name, then renamed), so a run killed at any instant leaves
each file old or new, never torn. A new run folder appears with its config.yaml already in it.

pyyaml, matplotlib and tensorboard come with ``pip install "statelayers[train]"``.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import io
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

from .._extras import require
from ..checkpoint import TEMP_PREFIX, CheckpointError, atomic_write_bytes
from .config import TrainConfig

__all__ = ["METRIC_FIELDS", "check_run_dir_free", "claim_run_dir", "default_run_name", "lock_run_dir", "config_yaml",
           "write_config", "read_config", "write_summary", "write_metrics", "read_metrics", "plot_curves",
           "open_tensorboard", "weights_checksum"]

METRIC_FIELDS = ("epoch", "step", "lr", "train_loss", "eval_loss", "eval_acc", "eval_top5", "ema_eval_acc",
                 "images_per_s", "elapsed_s")


# in every run folder: who created it (host, pid, time)
OWNER_FILE = ".owner"
# held locked (flock) by the process that trains in the folder, so that no second process resumes it meanwhile
LOCK_FILE = ".lock"


def default_run_name(model: str, data: str) -> str:
    """``MODEL-DATA-YYYYmmdd-HHMMSS``, made a single safe folder name (a timm hub model name has slashes)."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", f"{model}-{data}-{time.strftime('%Y%m%d-%H%M%S')}")


def _owner_line() -> str:
    return f"{socket.gethostname()} {os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n"


def _claim(path: Path, files: dict[str, bytes]) -> bool:
    """Make ``path`` this process's run folder, atomically, with ``files`` in it: the folder is built under a
    temporary name and renamed to ``path``, which succeeds only where ``path`` does not exist or is an empty folder
    (a rename never replaces a non-empty folder). True when the folder is this process's; False when it is taken."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        return False
    # the temporary name says whose it is (`_remove_stale_claims` reads it), since a kill may come before any file
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{os.getpid()}@{socket.gethostname()}@"
                                                         f"{path.name}."))
    try:
        (tmp / OWNER_FILE).write_text(_owner_line())
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        try:
            os.rename(tmp, path)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                return False
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return True


def _remove_stale_claims(out: Path) -> None:
    """Delete the temporary folders of claims (``.tmp-PID@HOST@NAME.*``) that were killed before their rename, on
    this host, by processes that no longer run."""
    host = socket.gethostname()
    for p in out.glob(f"{TEMP_PREFIX}*@*@*"):
        pid, owner_host, _ = p.name[len(TEMP_PREFIX):].split("@", 2)
        if owner_host != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except OSError:  # alive, but another user's
            continue


def lock_run_dir(run_dir: Path):
    """Lock ``run_dir`` for this process (until it exits or the returned file is closed); a ValueError when another
    process holds it. Without fcntl (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:
        return None
    f = open(Path(run_dir) / LOCK_FILE, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise ValueError(f"run folder {run_dir} is in use by another process (it holds {LOCK_FILE}); "
                         "wait for it to end") from None
    return f


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


def _check_output(output: Path) -> None:
    """A ValueError when ``output`` cannot hold run folders: a file, or a folder (or the nearest existing parent of
    one to be made) this process cannot write to."""
    existing = output
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"output folder {output} cannot be made: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"output folder {output} is not writable ({existing} does not let this user write to it)")


def check_run_dir_free(output: str | Path, name: str | None, *, overwrite: bool = False) -> None:
    """Refuse early (before the data and model are built) an output folder or a ``name`` that `claim_run_dir` would
    refuse; the claim itself, later, is what decides."""
    _check_output(Path(output))
    if name is None or overwrite:
        return
    path = Path(output) / name
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise _refused(path)


def claim_run_dir(output: str | Path, name: str | None, default: str, *, overwrite: bool = False,
                  quiet: bool = False, files: dict[str, bytes] | None = None) -> Path:
    """Create the folder of a new run under ``output``, atomically and with ``files`` ({name: bytes}) already in
    it, so that no two runs ever share one.

    An explicit ``name`` whose folder exists and is not empty is refused (ValueError), unless ``overwrite``: then
    the old folder is renamed to ``NAME.old-<time>`` (kept whole, never deleted) and a fresh one created. Without
    a name, ``default`` is used, with the first free suffix -1, -2, ... when another run (another process started
    in the same second) holds it."""
    out = Path(output)
    _check_output(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"output folder {out} cannot be made ({e.strerror})") from e
    _remove_stale_claims(out)
    files = files or {}
    if name is not None:
        path = out / name
        if _claim(path, files):
            return path
        if not overwrite:
            raise _refused(path)
        aside = _move_aside(path)
        if not quiet:
            print(f"--overwrite: moved the old run folder {path} to {aside}", flush=True)
        if not _claim(path, files):
            raise ValueError(f"run folder {path} was taken by another run while moving the old one aside")
        return path
    for k in range(10000):
        path = out / (default if k == 0 else f"{default}-{k}")
        if _claim(path, files):
            return path
    raise FileExistsError(f"no free run folder name {default}-N under {out}")


def _write_yaml(path: Path, data: dict) -> None:
    yaml = require("yaml", "the run folder's config.yaml and summary.yaml")
    atomic_write_bytes(path, yaml.safe_dump(data, sort_keys=False).encode())


def config_yaml(cfg: TrainConfig, extra: dict) -> bytes:
    """The text of config.yaml: the fields of ``cfg`` and ``extra`` (figures of the run: world size, lr, ...)."""
    yaml = require("yaml", "the run folder's config.yaml")
    data = {**dataclasses.asdict(cfg), **extra}
    data = {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()}
    return yaml.safe_dump(data, sort_keys=False).encode()


def write_config(run_dir: Path, cfg: TrainConfig, extra: dict) -> None:
    """config.yaml (`config_yaml`), replaced whole."""
    atomic_write_bytes(Path(run_dir) / "config.yaml", config_yaml(cfg, extra))


def read_config(run_dir: Path) -> dict:
    """The run folder's config.yaml, as written by `write_config`; a CheckpointError when it is missing or damaged."""
    yaml = require("yaml", "the run folder's config.yaml")
    path = Path(run_dir) / "config.yaml"
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run folder (no config.yaml)")
    try:
        data = yaml.safe_load(path.read_text(errors="replace"))
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        raise CheckpointError(f"{path} is damaged (not YAML{f' at line {where.line + 1}' if where else ''})") from e
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        raise CheckpointError(f"{path} is damaged (it does not hold a run's settings)")
    return data


def write_summary(run_dir: Path, summary: dict) -> None:
    """summary.yaml: what a finished run measured."""
    _write_yaml(run_dir / "summary.yaml", summary)


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """metrics.csv, replaced whole: a row per epoch; the columns are METRIC_FIELDS, then any other key of the rows
    (e.g. COCO metrics) in the order they first appear."""
    fields = list(METRIC_FIELDS)
    for r in rows:
        fields += [k for k in r if k not in fields]
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in fields})
    atomic_write_bytes(Path(run_dir) / "metrics.csv", text.getvalue().encode())


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of the run folder's metrics.csv (values as strings); [] when there is none yet."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_curves(runs: dict[str, list[dict]], path: str | Path, title: str = "", acc_label: str = "top-1 accuracy",
                loss_label: str = "cross-entropy", score_key: str = "eval_acc") -> None:
    """Loss and accuracy (or the metric ``score_key``) against epoch, one line per run, written to `path` (PNG)."""
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
        ax_acc.plot(ep, [float(r[score_key]) for r in rows], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel=loss_label, title="loss")
    ax_acc.set(xlabel="epoch", ylabel=acc_label, title=f"test {acc_label}")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, dpi=110, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)


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
