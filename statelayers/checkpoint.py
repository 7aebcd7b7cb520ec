"""Checkpoints that survive a crash at any instant and fail loudly when they are damaged.

A checkpoint is a folder `checkpoints/step-NNNNNNNN/` holding
    model.safetensors   the weights (safetensors: no code runs on load)
    ema.safetensors     the EMA weights, when EMA is on
    state.pt            optimizer / scheduler / scaler state, epoch, step, best metric, the metrics so far
                        (read with torch.load(weights_only=True))
    MANIFEST.sha256     the SHA-256 of each of those files, written last
It is written under a temporary name (`.tmp-...`) and renamed into place when complete; then the one-line
pointer file `checkpoints/LAST` is replaced atomically. A run killed at any point therefore leaves either the
previous or the new checkpoint, never a torn one, and at worst a `.tmp-*` entry that the next run of the
folder removes. Loading verifies the manifest; `resume_checkpoint` falls back to the newest intact checkpoint
when the one LAST names is damaged, and says so.

Every safetensors file written by `save_weights` (checkpoints, `best.safetensors`) also carries the SHA-256 of
its tensors in its metadata (`statelayers.sha256`), so a single weights file is verified on its own when loaded.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = [
    "CheckpointError",
    "TEMP_PREFIX",
    "atomic_write_bytes",
    "save_weights",
    "load_weights",
    "tensors_digest",
    "write_checkpoint",
    "latest_checkpoint",
    "checkpoint_folders",
    "verify_checkpoint",
    "resume_checkpoint",
    "point_last_at",
    "read_state",
    "remove_temporaries",
    "load_into_larger_model",
]

# every file or folder written under a temporary name starts with this; `remove_temporaries` deletes them
TEMP_PREFIX = ".tmp-"
MANIFEST = "MANIFEST.sha256"
DIGEST_KEY = "statelayers.sha256"  # safetensors metadata: SHA-256 of the tensors (`tensors_digest`)
_CKPT_NAME = re.compile(r"step-(\d{8,})(?:-r(\d+))?")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, or does not fit the model."""


def _fsync(path: Path, directory: bool = False) -> None:
    """Flush a file (or a folder's entries) to disk, so that a power cut cannot undo a rename that follows."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a folder
        pass
    finally:
        os.close(fd)


def _temp_file(folder: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{TEMP_PREFIX}{name}.")
    os.close(fd)
    return Path(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` in one step: readers see the old or the new file, never a part."""
    path = Path(path)
    tmp = _temp_file(path.parent, path.name)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_weights(module: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Atomically write a module's state_dict as safetensors (shared storage is cloned), with the SHA-256 of the
    tensors in its metadata."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    path = Path(path)
    tmp = _temp_file(path.parent, path.name)
    try:
        save_file(state, str(tmp), metadata={**(metadata or {}), DIGEST_KEY: tensors_digest(state)})
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_weights(module: torch.nn.Module, path: Path, what: str = "checkpoint", *, drop_prefixes: tuple[str, ...] = (),
                 expect_model: str | None = None, hint: str = "") -> dict[str, str]:
    """Load safetensors weights into `module`, all or nothing; returns the file's metadata.

    A file that carries the SHA-256 of its tensors (every file `save_weights` writes) is verified first.
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
    expected = metadata.get(DIGEST_KEY)
    if expected is not None and tensors_digest(state) != expected:
        raise CheckpointError(f"{what} {path} is damaged: its tensors do not match the SHA-256 written with them")
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


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _sort_key(folder: Path) -> tuple[int, int]:
    m = _CKPT_NAME.fullmatch(folder.name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (-1, -1)


def checkpoint_folders(ckpt_root: Path) -> list[Path]:
    """The checkpoint folders under ``ckpt_root``, oldest first (by step, then by rewrite)."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if _CKPT_NAME.fullmatch(p.name) and p.is_dir() and not p.is_symlink()),
                  key=_sort_key)


def write_checkpoint(ckpt_root: Path, step: int, weights: dict[str, torch.nn.Module], state: dict,
                     metadata: dict[str, str], keep: int = 2) -> Path:
    """Write `step-NNNNNNNN/` complete (its manifest last) under a temporary name, rename it, then move `LAST` to
    it and delete all but the newest ``keep`` checkpoints. A step written before keeps its folder (the new one is
    `step-NNNNNNNN-r1`, ...): a folder LAST names is never replaced."""
    ckpt_root = Path(ckpt_root)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=ckpt_root, prefix=f"{TEMP_PREFIX}{name}."))
    try:
        for fname, module in weights.items():
            save_weights(module, tmp / fname, {**metadata, "step": str(step)})
        with open(tmp / "state.pt", "wb") as f:
            torch.save({**state, "step": step}, f)
            f.flush()
            os.fsync(f.fileno())
        files = sorted(weights) + ["state.pt"]
        manifest = "".join(f"{_file_sha256(tmp / f)}  {f}\n" for f in files)
        atomic_write_bytes(tmp / MANIFEST, manifest.encode())
        _fsync(tmp, directory=True)
        rev = 0
        while (ckpt_root / (name + (f"-r{rev}" if rev else ""))).exists():
            rev += 1
        final = ckpt_root / (name + (f"-r{rev}" if rev else ""))
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync(ckpt_root, directory=True)
    point_last_at(final, keep)
    return final


def point_last_at(ckpt: Path, keep: int = 2) -> None:
    """Make ``LAST`` name the checkpoint folder ``ckpt`` (atomically), then delete all checkpoints but the newest
    ``keep`` (never ``ckpt``)."""
    ckpt = Path(ckpt)
    root = ckpt.parent
    atomic_write_bytes(root / "LAST", ckpt.name.encode())
    _fsync(root, directory=True)
    old = [p for p in checkpoint_folders(root) if p.name != ckpt.name]
    for p in old[: max(0, len(old) - (keep - 1))]:
        # renamed first, so that a kill while deleting leaves a `.tmp-` folder, never a torn checkpoint
        doomed = root / f"{TEMP_PREFIX}old-{p.name}"
        try:
            os.rename(p, doomed)
        except OSError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)


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


def verify_checkpoint(ckpt: Path) -> None:
    """Check every file of a checkpoint folder against its MANIFEST.sha256 (CheckpointError naming the first file
    that is missing or differs). A folder without a manifest (written before manifests existed) passes."""
    ckpt = Path(ckpt)
    manifest = ckpt / MANIFEST
    if not manifest.is_file():
        if not (ckpt / "state.pt").is_file():
            raise CheckpointError(f"checkpoint {ckpt} has no state.pt")
        return
    for line in manifest.read_text(errors="replace").splitlines():
        digest, _, fname = line.partition("  ")
        if not fname or "/" in fname or fname.startswith("."):
            raise CheckpointError(f"checkpoint manifest {manifest} is damaged (line {line[:60]!r})")
        path = ckpt / fname
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} is missing")
        if _file_sha256(path) != digest:
            raise CheckpointError(f"checkpoint file {path} is damaged: it does not match its SHA-256 in {MANIFEST}")


def read_state(ckpt: Path) -> dict:
    path = Path(ckpt) / "state.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {ckpt} has no state.pt")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises several types for damaged files
        raise CheckpointError(f"checkpoint state {path} is corrupt or truncated ({type(e).__name__}: {e})") from e


def resume_checkpoint(ckpt_root: Path) -> tuple[Path, dict, list[str]] | None:
    """The checkpoint to resume from: the newest intact one (normally the one LAST names; a newer complete folder
    exists when a run was killed between writing it and moving LAST), with its state and a note for each damaged
    checkpoint passed over. None when there is no checkpoint at all; a CheckpointError (naming the damage) when none
    is intact, or when LAST names something outside ``ckpt_root``."""
    ckpt_root = Path(ckpt_root)
    problems = []
    try:
        latest_checkpoint(ckpt_root)  # LAST, when there is one, must name a folder inside ckpt_root
    except CheckpointError as e:
        if "not a checkpoint folder inside" in str(e):
            raise
        problems.append(str(e))
    candidates = list(reversed(checkpoint_folders(ckpt_root)))
    if not candidates:
        if problems:
            raise CheckpointError(f"no checkpoint in {ckpt_root}: " + "; ".join(problems))
        return None
    for ckpt in candidates:
        try:
            verify_checkpoint(ckpt)
            state = read_state(ckpt)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        notes = [f"{p}; resuming from {ckpt} instead" for p in problems]
        return ckpt, state, notes
    raise CheckpointError(f"no intact checkpoint in {ckpt_root}: " + "; ".join(problems))


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the `.tmp-*` files and folders that killed writes left directly inside ``folder``; returns them.
    Only for a folder this process owns (a run folder it holds the lock of)."""
    folder = Path(folder)
    gone = []
    if not folder.is_dir():
        return gone
    for p in folder.iterdir():
        if p.name.startswith(TEMP_PREFIX):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            gone.append(p)
    return gone


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
