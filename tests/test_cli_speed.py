"""Where a person waits: `statelayers --help` builds its parser without torch, timm or the models; every flag is
described; `statelayers demo` reports each finished epoch with the time so far and an estimate of the time left."""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
import time
import typing
from pathlib import Path

import statelayers
from statelayers.cli import COMMANDS, RECIPE_NAMES, TASK_NAMES, _train_config, build_parser, train_config_fields
from statelayers.engine import TrainConfig
from statelayers.engine.recipes import RECIPES
from statelayers.engine.tasks import TASKS
from statelayers.tools.demo import DemoProgress, format_duration, run_demo

PKG_DIR = Path(statelayers.__file__).parent
COMMAND_NAMES = [c.name for c in COMMANDS]
HEAVY = ("torch", "timm", "numpy", "statelayers.engine", "statelayers.models", "statelayers.layers")

# Builds the parser and asks it for help with the package's __init__ (which imports torch and registers every
# model) replaced by an empty package, so that what is left is what the parser itself imports.
_PARSER_ONLY = f"""
import sys, types
pkg = types.ModuleType("statelayers")
pkg.__path__ = [{str(PKG_DIR)!r}]
sys.modules["statelayers"] = pkg
from statelayers.cli import COMMANDS, build_parser
parser = build_parser()
for argv in [["--help"]] + [[c.name, "--help"] for c in COMMANDS]:
    try:
        parser.parse_args(argv)
    except SystemExit as e:
        assert e.code == 0, argv
print("LOADED", [m for m in {HEAVY!r} if m in sys.modules])
"""


def test_parser_and_help_import_no_torch_timm_or_models():
    out = subprocess.run([sys.executable, "-c", _PARSER_ONLY], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: statelayers train" in out.stdout and "--max-steps" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "LOADED []"


_CONSOLE_SCRIPT = f"""
import sys
import statelayers_cli
for argv in [["--help"], ["no-such-command"]] + [[c, "--help"] for c in {COMMAND_NAMES!r}]:
    try:
        statelayers_cli.main(argv)
    except SystemExit as e:
        assert e.code == (2 if argv == ["no-such-command"] else 0), argv
print("LOADED", [m for m in {HEAVY!r} if m in sys.modules])
"""


def test_the_console_script_answers_help_without_importing_the_package():
    """The `statelayers` console script (`statelayers_cli:main`, outside the package): --help, each command's --help
    and a mistyped command load neither the package's __init__ nor torch, timm or the models."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CONSOLE_SCRIPT], capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - started
    assert out.returncode == 0, out.stderr
    assert "usage: statelayers train" in out.stdout and "invalid choice: 'no-such-command'" in out.stderr
    assert out.stdout.strip().splitlines()[-1] == "LOADED []"
    assert "statelayers" not in out.stdout.split("LOADED")[-1]
    print(f"console script: {len(COMMAND_NAMES) + 2} help/usage answers in {took:.2f} s (one interpreter)")


def test_python_m_statelayers_help_answers():
    for argv in (["--help"], ["train", "--help"]):
        out = subprocess.run([sys.executable, "-m", "statelayers", *argv], capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("usage: statelayers")


def _optional_actions(parser: argparse.ArgumentParser, path: str = "statelayers"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _optional_actions(sub, f"{path} {name}")
        elif action.option_strings and not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_flag_has_a_description():
    actions = list(_optional_actions(build_parser()))
    commands = {path for path, _ in actions}
    assert {"statelayers train", "statelayers eval", "statelayers demo", "statelayers cam"} <= commands
    undescribed = [f"{path} {a.option_strings[0]}" for path, a in actions
                   if not a.help or a.help == argparse.SUPPRESS or not a.help.strip()]
    assert undescribed == []
    flags = {a.option_strings[0] for path, a in actions if path == "statelayers train"}
    assert {"--amp", "--output", "--subset", "--max-steps", "--ckpt-every", "--max-len"} <= flags


def test_train_flags_are_train_config_fields():
    """The fields the parser reads from engine/config.py's source are TrainConfig's, with their types."""
    read = train_config_fields()
    assert [name for name, _, _ in read] == [f.name for f in dataclasses.fields(TrainConfig)]
    hints = typing.get_type_hints(TrainConfig)
    for name, kind, _ in read:
        hint = hints[name]
        first = typing.get_args(hint)[0] if typing.get_args(hint) else hint
        assert kind == first.__name__, name
    assert RECIPE_NAMES == tuple(RECIPES)
    assert TASK_NAMES == tuple(TASKS)


def test_train_flags_parse_into_a_config():
    args = build_parser().parse_args(["train", "--model", "s7_tiny", "--data", "sfmnist", "--max-steps", "5",
                                      "--lr", "0.01", "--ema", "--no-compile", "--model-kwargs", "d_state=16",
                                      "--decay-milestones", "8", "11.5", "--amp", "bf16"])
    cfg = _train_config(args)
    assert (cfg.model, cfg.data, cfg.max_steps, cfg.lr, cfg.ema, cfg.compile, cfg.amp) == \
        ("s7_tiny", "sfmnist", 5, 0.01, True, False, "bf16")
    assert cfg.model_kwargs == {"d_state": 16} and cfg.decay_milestones == [8, 11.5]
    assert cfg.epochs is None and cfg.seed == 0  # unset flags keep TrainConfig's defaults


# --- demo progress ------------------------------------------------------------------------------


def test_format_duration():
    assert [format_duration(s) for s in (0, 9.6, 65, 3725)] == ["0:00", "0:10", "1:05", "1:02:05"]


def _epochs(p: DemoProgress, accs: list[float], first: int = 0) -> None:
    for i, acc in enumerate(accs, start=first):
        p.epoch_ended({"epoch": i, "eval_acc": acc})


def test_progress_estimates_the_time_left_from_the_time_per_epoch(capsys):
    """Two runs of 4 epochs: after 2 epochs in 20 s, 6 are left at 10 s each: ~1:00."""
    p = DemoProgress(total_epochs=8)
    p.start_run("a", 4)
    p.started_at = time.time() - 20
    _epochs(p, [0.5, 0.6])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "a  epoch 2/4  eval_acc 0.6000  elapsed 0:20  remaining ~1:00" in lines[1]
    _epochs(p, [0.7, 0.8], first=2)
    p.start_run("b", 4)
    p.started_at = time.time() - 50
    _epochs(p, [0.9])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines] == [["a", "epoch", "3/4"], ["a", "epoch", "4/4"],
                                                    ["b", "epoch", "1/4"]]
    assert lines[-1].endswith("elapsed 0:50  remaining ~0:30")  # 5 epochs in 50 s, 3 left


def test_demo_prints_progress_while_it_trains(tmp_path, capsys):
    """The smallest demo: one model, 2 epochs of 200 digits; a line per epoch with an estimate, then the table
    rows as before."""
    rows, out_dir = run_demo("digits", epochs=2, subset=200, output=str(tmp_path), models=("cifar_resnet20",))
    out = capsys.readouterr().out
    lines = re.findall(r"^  cifar_resnet20  epoch (\d)/2  eval_acc [\d.]+  elapsed [\d:]+  remaining ~([\d:]+)$",
                       out, re.MULTILINE)
    assert [epoch for epoch, _ in lines] == ["1", "2"]
    assert lines[-1][1] == "0:00"
    assert len(rows) == 1 and rows[0].model == "cifar_resnet20" and (out_dir / "curves.png").exists()
