"""The `statelayers` command line (models, profile) and the counting in statelayers.tools.profile."""

from __future__ import annotations

import re
import runpy
import sys

import pytest
import timm
import torch
import torch.nn as nn

import statelayers  # noqa: F401  (registers the models)
from statelayers.cli import main
from statelayers.tools.profile import PAPER_TABLES, count_bytes, count_macs, count_params, paper_table


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def field(out: str, key: str) -> str:
    """Value of a `key  value` line of `statelayers profile` output."""
    m = re.search(rf"^{key}\s+(.*)$", out, re.MULTILINE)
    assert m, f"no {key!r} line in:\n{out}"
    return m.group(1)


# --- statelayers models ------------------------------------------------------------------------


def test_models_lists_only_statelayers_models(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    rows = dict(line.split() for line in out.splitlines())
    assert rows["s6la_resnet50"] == "s6la_resnet"
    assert rows["cifar_resnet20"] == "small_resnet"
    assert "resnet50" not in rows and "vit_tiny_patch16_224" not in rows  # timm's own models
    assert all(timm.is_model(name) for name in rows)


def test_models_filter(capsys):
    code, out, _ = run(capsys, "models", "--filter", "s6la_resnet*")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert "s6la_resnet50" in names and all(n.startswith("s6la_resnet") for n in names)
    assert run(capsys, "models", "--filter", "no-such-thing")[0] == 2


# --- counting -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fake", [False, True])
def test_count_macs_closed_form(fake):
    # conv: MACs = C_out * H_out * W_out * (C_in / groups) * k_h * k_w; the bias add is not counted
    conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1, bias=True)  # 17x17 -> 9x9
    assert count_macs(conv, (3, 17, 17), fake=fake) == 8 * 9 * 9 * 3 * 3 * 3
    depthwise = nn.Conv2d(4, 4, kernel_size=3, padding=1, groups=4)
    assert count_macs(depthwise, (4, 6, 6), fake=fake) == 4 * 6 * 6 * 1 * 3 * 3
    # linear on (1, 3, 7) -> (1, 3, 5): 3 rows x 7 x 5
    assert count_macs(nn.Linear(7, 5), (3, 7), fake=fake) == 3 * 7 * 5
    # BN / ReLU / pooling are free
    seq = nn.Sequential(nn.Conv2d(2, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    seq.train()
    assert count_macs(seq, (2, 5, 5), fake=fake) == 4 * 5 * 5 * 2
    assert seq.training  # mode restored
    assert count_params(seq) == 2 * 4 + 2 * 4


class _Lambda(nn.Module):
    def __init__(self, fn, *params):
        super().__init__()
        self.fn, self.p = fn, nn.ParameterList(params)

    def forward(self, x):
        return self.fn(x, *self.p)


@pytest.mark.parametrize("fake", [False, True])
def test_count_bytes_closed_form(fake):
    f = 4  # float32
    # a conv reads its input and weight and writes its output (bias: C_out more read)
    conv = nn.Conv2d(3, 8, kernel_size=3, bias=True)  # 17x17 -> 15x15
    assert count_bytes(conv, (3, 17, 17), batch_size=2, fake=fake) == f * (2 * 3 * 17 * 17 + 8 * 3 * 9 + 8
                                                                           + 2 * 8 * 15 * 15)
    n = 2 * 4 * 5 * 5  # elements of the (2, 4, 5, 5) input
    # in place: the target is read and written
    assert count_bytes(_Lambda(lambda x: x.relu_()), (4, 5, 5), batch_size=2, fake=fake) == f * 2 * n
    # views and allocations move nothing; copy_ reads the source and writes the destination only
    assert count_bytes(_Lambda(lambda x: x.view(2, -1).t()), (4, 5, 5), batch_size=2, fake=fake) == 0
    assert count_bytes(_Lambda(lambda x: torch.empty_like(x).copy_(x)), (4, 5, 5), 2, fake=fake) == f * 2 * n
    # out=: written, not read; both operands read (here the same tensor twice)
    assert count_bytes(_Lambda(lambda x: torch.add(x, x, out=torch.empty_like(x))), (4, 5, 5), 2,
                       fake=fake) == f * 3 * n
    # a broadcast operand counts its distinct elements: (4, 1, 1) scale, and (4,) expanded to (2, 4, 5, 5)
    scale = nn.Parameter(torch.ones(4, 1, 1))
    assert count_bytes(_Lambda(lambda x, w: x * w, scale), (4, 5, 5), 2, fake=fake) == f * (2 * n + 4)
    shift = nn.Parameter(torch.ones(4))
    assert count_bytes(_Lambda(lambda x, w: x + w[:, None, None].expand(2, 4, 5, 5), shift), (4, 5, 5), 2,
                       fake=fake) == f * (2 * n + 4)
    with pytest.raises(ValueError, match="batch_size"):
        count_bytes(conv, (3, 17, 17), batch_size=0)


def test_count_bytes_s6la_fold_moves_less():
    plain = timm.create_model("s6la_resnet50", num_classes=10)
    folded = timm.create_model("s6la_resnet50", num_classes=10).reparameterize()
    vanilla = timm.create_model("resnet50", num_classes=10)
    b_van, b_plain, b_fold = (count_bytes(m, (3, 64, 64), batch_size=2, fake=True) for m in (vanilla, plain, folded))
    assert b_van < b_fold < b_plain


# --- statelayers profile ------------------------------------------------------------------------


def test_profile_s6la_resnet50_params(capsys):
    code, out, _ = run(capsys, "profile", "s6la_resnet50")
    assert code == 0
    assert field(out, "model") == "s6la_resnet50"
    assert field(out, "input") == "1x3x224x224"
    printed = int(field(out, "params").split()[0].replace(",", ""))
    assert printed == count_params(timm.create_model("s6la_resnet50"))  # 25,832,456 when written
    assert 4.2 < float(field(out, "GMACs").split()[0]) < 4.5  # paper: 4.4


def test_profile_vanilla_resnet50_gmacs(capsys):
    code, out, _ = run(capsys, "profile", "resnet50")  # a plain timm model works too
    assert code == 0
    assert float(field(out, "GMACs").split()[0]) == pytest.approx(4.1, abs=0.05)
    assert int(field(out, "params").split()[0].replace(",", "")) == 25_557_032


def test_profile_options(capsys):
    code, out, _ = run(capsys, "profile", "cifar_resnet20", "--img-size", "32", "--in-chans", "3", "--num-classes", "7")
    assert code == 0
    assert field(out, "input") == "1x3x32x32"
    assert field(out, "num_classes") == "7"


def test_profile_unknown_model(capsys):
    code, out, err = run(capsys, "profile", "no_such_model50")
    assert code == 2
    assert out == ""
    assert "no_such_model50" in err and "statelayers models" in err
    assert "Traceback" not in err


def test_profile_usage_errors(capsys):
    assert run(capsys, "profile")[0] == 2
    assert run(capsys, "profile", "resnet50", "--table", "resnet")[0] == 2
    code, _, err = run(capsys, "profile", "--table", "nope")
    assert code == 2 and "resnet" in err
    with pytest.raises(SystemExit) as exc:  # malformed arguments: argparse exits with 2
        main(["profile", "resnet50", "--img-size", "big"])
    assert exc.value.code == 2


def test_paper_table_values():
    rows = paper_table("resnet")
    assert len(rows) == 12 and set(PAPER_TABLES) >= {"resnet"}
    s6la50 = next(r for r in rows if r.model == "s6la_resnet50")
    assert (s6la50.backbone, s6la50.method, s6la50.params_m, s6la50.flops_g) == ("ResNet-50", "S6LA", 25.8, 4.4)
    assert {r.model for r in rows if r.method == "Vanilla"} == {"resnet50", "resnet101", "resnet152"}
    assert all("Table 1" in r.source for r in rows)
    with pytest.raises(KeyError):
        paper_table("nope")


def test_profile_table_one_row(capsys):
    code, out, _ = run(capsys, "profile", "--table", "resnet", "--filter", "s6la_resnet50")
    assert code == 0
    row = next(line for line in out.splitlines() if "s6la_resnet50" in line)
    assert row.split()[:3] == ["ResNet-50", "S6LA", "s6la_resnet50"]
    assert "25.8" in row and "25.832" in row


def test_profile_table_transformers_has_table2_rows(capsys):
    code, out, _ = run(capsys, "profile", "--table", "transformers", "--filter", "deit_tiny_patch16_224")
    assert code == 0
    row = next(line for line in out.splitlines() if "deit_tiny_patch16_224" in line)
    assert row.split()[:3] == ["DeiT-Ti", "Vanilla", "deit_tiny_patch16_224"]
    assert "5.7" in row and "5.717" in row
    assert "Table 2" in out


@pytest.mark.slow
def test_profile_table_resnet(capsys):
    code, out, _ = run(capsys, "profile", "--table", "resnet")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["backbone", "method", "timm"]
    s6la50 = next(line for line in lines if " s6la_resnet50 " in line)
    assert s6la50.split()[:2] == ["ResNet-50", "S6LA"]
    for name in ("resnet50", "resnet101", "resnet152", "s6la_resnet101", "s6la_resnet152"):
        assert any(f" {name} " in line for line in lines), name
    assert "Table 1" in out


def test_python_dash_m(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["statelayers", "models", "--filter", "s6la_resnet50"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("statelayers", run_name="__main__", alter_sys=True)
    assert exc.value.code == 0
    assert capsys.readouterr().out.split() == ["s6la_resnet50", "s6la_resnet"]


def test_table_skips_unregistered_models(monkeypatch, capsys):
    from statelayers.tools import profile

    row = profile.PaperRow("Toy", "Future", "not_registered_net50", 1.0, 0.1, "paper Table 0")
    monkeypatch.setitem(profile.PAPER_TABLES, "toy", (row,))
    code, out, _ = run(capsys, "profile", "--table", "toy")
    assert code == 0
    assert "not_registered_net50" in out and "not registered (skipped): not_registered_net50" in out
