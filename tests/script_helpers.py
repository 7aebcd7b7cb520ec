"""Helpers of the tests that run a benchmark script in a subprocess and read the markdown it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def one_thread_env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", MKL_NUM_THREADS="1")


def run_script(name: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python benchmarks/NAME ARGS...` from the project root, one thread."""
    return subprocess.run([sys.executable, str(BENCH / name), *args], env=one_thread_env(), capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every markdown table in `text`: (header cells, rows of cells)."""
    out, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            out.append((block[0], block[2:]))
            block = []
    return out


def check_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit code {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n" \
                                 f"{proc.stderr[-3000:]}"
