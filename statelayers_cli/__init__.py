"""The ``statelayers`` console script, kept outside the package ``statelayers`` so that ``statelayers --help``, a
command's ``--help`` and a mistyped command answer at once.

Importing the package runs its ``__init__``, which imports torch and timm and registers every model with timm
(seconds; that is what ``import statelayers`` promises its users). The command line itself
(``statelayers/cli.py``) imports nothing heavy at module level, so this loads it by its file path, without the
package; a command imports what it needs (``from .engine import train`` imports the package then) when it runs.
``python -m statelayers`` runs the same ``main`` through the package.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    cli = sys.modules.get("statelayers.cli")
    if cli is None:
        package = importlib.util.find_spec("statelayers")  # finds the package's folder without importing it
        if package is None or not package.submodule_search_locations:
            print("statelayers: error: the statelayers package is not installed", file=sys.stderr)
            return 2
        path = Path(next(iter(package.submodule_search_locations))) / "cli.py"
        spec = importlib.util.spec_from_file_location("statelayers.cli", path)
        cli = importlib.util.module_from_spec(spec)
        sys.modules["statelayers.cli"] = cli
        spec.loader.exec_module(cli)
    return cli.main(argv)
