"""Shared test helpers."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The fused S6LA kernels (statelayers/kernels) are Triton kernels; tests run them on CPU tensors in Triton's
# interpreter, which must be chosen before the kernels are first defined (they are imported on first use).
os.environ.setdefault("TRITON_INTERPRET", "1")


def one_thread_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def sigkill_then_resume():
    """`run(cmd, run_dir)`: start the training command `cmd` (which writes checkpoints often), SIGKILL it as soon as
    its first checkpoint exists, then `statelayers train --resume run_dir`. Returns (state of the checkpoint the kill
    left, the resume's CompletedProcess)."""
    from statelayers.checkpoint import latest_checkpoint, read_state

    def run(cmd: list[str], run_dir: Path):
        proc = subprocess.Popen(cmd, env=one_thread_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ckpts = Path(run_dir) / "checkpoints"
        deadline = time.time() + 300
        while time.time() < deadline and not (ckpts / "LAST").exists():
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = read_state(latest_checkpoint(ckpts))
        resumed = subprocess.run([sys.executable, "-m", "statelayers", "train", "--resume", str(run_dir), "--quiet"],
                                 env=one_thread_env(), capture_output=True, text=True)
        return state, resumed

    return run
