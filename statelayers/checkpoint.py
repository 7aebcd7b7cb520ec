"""Checkpoints that survive a crash at any instant and fail loudly when they are damaged.

A checkpoint is a folder `checkpoints/step-NNNNNNNN/` holding
    model.safetensors   the weights (safetensors: no code runs on load)
    ema.safetensors     the EMA weights, when EMA is on
    state.pt            optimizer / scheduler / scaler state, epoch, step, best metric
                        (read with torch.load(weights_only=True))
It is written under a temporary name and renamed into place when complete; then the one-line
pointer file `checkpoints/LAST` is replaced atomically. A run killed at any point therefore
leaves either the previous or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = [
    "CheckpointError",
    "atomic_write_bytes",
    "save_weights",
    "load_weights",
    "write_checkpoint",
    "latest_checkpoint",
    "read_state",
    "load_into_larger_model",
]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, or does not fit the model."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(module: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Atomically write a module's state_dict as safetensors (shared storage is cloned)."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata or {})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_weights(module: torch.nn.Module, path: Path, what: str = "checkpoint", *, drop_prefixes: tuple[str, ...] = (),
                 expect_model: str | None = None, hint: str = "") -> dict[str, str]:
    """Load safetensors weights into `module`, all or nothing; returns the file's metadata.

    `drop_prefixes`: file keys to ignore (a classifier head loaded into a headless backbone).
    `expect_model`: refuse a file whose metadata names another model. `hint` ends the mismatch message.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        state = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{what} {path} is corrupt or truncated ({e})") from e
    model_name = metadata.get("model")
    if expect_model is not None and model_name not in (None, expect_model):
        raise CheckpointError(f"{what} {path} was written for model {model_name!r}, not {expect_model!r}")
    if drop_prefixes:
        state = {k: v for k, v in state.items() if not k.startswith(drop_prefixes)}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        def listed(keys, n, sep=", "):
            return sep.join(keys[:n]) + (", ..." if len(keys) > n else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({listed(missing, 4)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({listed(unexpected, 4)})")
        if wrong:
            parts.append(f"{len(wrong)} of another shape ({listed(wrong, 3, '; ')})")
        raise CheckpointError(
            f"{what} {path} (written for model {model_name or '?'!r}) does not fit this model: " + ", ".join(parts)
            + (f"; {hint}" if hint else "")
        )
    module.load_state_dict(state)
    return metadata


def write_checkpoint(ckpt_root: Path, step: int, weights: dict[str, torch.nn.Module], state: dict,
                     metadata: dict[str, str], keep: int = 2) -> Path:
    """Write `step-NNNNNNNN/` complete under a temporary name, rename it, then move `LAST` to it."""
    ckpt_root = Path(ckpt_root)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=ckpt_root, prefix=f".{name}."))
    try:
        for fname, module in weights.items():
            save_weights(module, tmp / fname, {**metadata, "step": str(step)})
        fd, tmp_state = tempfile.mkstemp(dir=tmp)
        with os.fdopen(fd, "wb") as f:
            torch.save({**state, "step": step}, f)
        os.replace(tmp_state, tmp / "state.pt")
        final = ckpt_root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_bytes(ckpt_root / "LAST", name.encode())
    old = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The checkpoint folder that ``ckpt_root/LAST`` names (None without LAST). LAST must name a folder
    directly inside ``ckpt_root`` (a name, not a path; no link out of it): anything else is a CheckpointError."""
    pointer = Path(ckpt_root) / "LAST"
    if not pointer.is_file():
        return None
    name = pointer.read_text(errors="replace").strip()
    path = Path(ckpt_root) / name
    inside = (name not in ("", ".", "..") and "/" not in name and "\\" not in name and "\0" not in name
              and not os.path.isabs(name))
    if inside and path.exists():
        inside = path.resolve().parent == Path(ckpt_root).resolve()
    if not inside:
        raise CheckpointError(f"{pointer} names {name!r}, which is not a checkpoint folder inside {ckpt_root}")
    if not path.is_dir():
        raise CheckpointError(f"{pointer} points at {path}, which does not exist")
    return path


def read_state(ckpt: Path) -> dict:
    path = Path(ckpt) / "state.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {ckpt} has no state.pt")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises several types for damaged files
        raise CheckpointError(f"checkpoint state {path} is corrupt or truncated ({type(e).__name__}: {e})") from e


def load_into_larger_model(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True,
                           adapt=None) -> list[str]:
    """Load a vanilla backbone's state_dict into a model that has it plus new modules.

    Every key must exist in the model (with `strict`; else unknown keys are skipped) with the same
    shape, or `adapt(key, tensor, target)` must turn it into the target's shape (returns None when
    it cannot). Nothing is loaded unless everything fits. Returns the model's keys the checkpoint
    lacked (the new modules, which keep their init).
    """
    own = model.state_dict()
    new = {}
    for k, v in state_dict.items():
        if k not in own:
            if strict:
                raise ValueError(f"checkpoint key {k!r} does not exist in {type(model).__name__}")
            continue
        target = own[k]
        fitted = v if v.shape == target.shape else (adapt(k, v, target) if adapt is not None else None)
        if fitted is None:
            raise ValueError(
                f"checkpoint tensor {k!r} has shape {tuple(v.shape)}, model expects {tuple(target.shape)}: "
                "is it the same architecture, image/patch size, in_chans and num_classes?"
            )
        new[k] = fitted
    model.load_state_dict(new, strict=False)
    return [k for k in own if k not in new]
