"""Language-modelling text (statelayers.data.text): the fortunes corpus (installed by Debian's `fortunes`, a fixture
otherwise), the PTB and WikiText-2 readers on tiny fixtures in the release formats, the windows and their collate.

The expected streams are rebuilt here from the raw files with code of this file (a regex parse of the fortune
format, plain str.split for the word files), not with the module's helpers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from statelayers.data.images import DatasetMissing
from statelayers.data.sequence_base import IGNORE_INDEX, pad_collate
from statelayers.data.text import (
    EOS,
    FORTUNES_DIR,
    FORTUNES_SEPARATOR,
    LM_WINDOW,
    TokenStreamDataset,
    build_fortunes,
    build_ptb,
    build_wikitext2,
    decode_bytes,
)
from statelayers.layers.padding import PAD_TOKEN

needs_fortunes = pytest.mark.skipif(not (FORTUNES_DIR / "fortunes.dat").is_file(),
                                    reason=f"Debian's fortunes corpus is not in {FORTUNES_DIR} "
                                           f"(sudo apt-get install -y fortunes)")


def stream_of(ds: TokenStreamDataset) -> torch.Tensor:
    """The token stream the windows of ``ds`` cover, checking on the way that each window's target is its inputs
    shifted by one and that consecutive windows continue each other."""
    parts, prev_target = [], None
    for i in range(len(ds)):
        x, y = ds[i]
        x = x["tokens"]
        assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape and x.numel() >= 1
        assert torch.equal(y[:-1], x[1:])  # target[t] is token t + 1
        if prev_target is not None:
            assert prev_target[-1] == x[0]  # the next window starts at the previous window's last target
        parts.append(x)
        prev_target = y
    return torch.cat(parts + [prev_target[-1:]])


def raw_entries(data: bytes) -> list[bytes]:
    """The fortune format parsed with a regex: pieces between lines holding only '%', blank edge lines removed."""
    out = []
    for piece in re.split(rb"^%\r?$\n?", data, flags=re.M):
        piece = re.sub(rb"\A(?:[ \t\r\f\v]*\n)+", b"", piece)
        piece = re.sub(rb"(?:\n[ \t\r\f\v]*)+\Z", b"", piece)
        if piece.strip():
            out.append(piece)
    return out


def distinct_entries(folder: Path, names: list[str]) -> list[bytes]:
    seen, out = set(), []
    for name in names:
        for e in raw_entries((folder / name).read_bytes()):
            key = b" ".join(e.split())
            if key not in seen:
                seen.add(key)
                out.append(e)
    return out


def split_stream(stream: torch.Tensor) -> list[bytes]:
    data = stream.to(torch.uint8).numpy().tobytes()
    assert data.endswith(FORTUNES_SEPARATOR)
    return data[: -len(FORTUNES_SEPARATOR)].split(FORTUNES_SEPARATOR)


def check_split(train, evals, expected: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Both streams hold the expected distinct entries, each once, in file order, and no text in both."""
    tr, ev = split_stream(stream_of(train)), split_stream(stream_of(evals))
    assert not {b" ".join(e.split()) for e in tr} & {b" ".join(e.split()) for e in ev}
    assert sorted(tr + ev) == sorted(expected)
    in_tr, in_ev = set(tr), set(ev)
    assert tr == [e for e in expected if e in in_tr] and ev == [e for e in expected if e in in_ev]
    return tr, ev


# ----------------------------------------------------------------------------------------------- fortunes fixture


def write_fortunes(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_bytes(text.encode("utf-8"))
        (folder / f"{name}.dat").write_bytes(b"\0" * 24)  # strfile's index: only its presence matters
    return folder


def fixture_files() -> dict[str, str]:
    many = "".join(f"Fortune number {i}: {'spam ' * (i % 7)}eggs.\n%\n" for i in range(300))
    return {
        "zeta": many,
        "alpha": ("%\nA day for firm decisions!\n%\n\n  spaced   out\n  art\n\n%\nsamé  text\nhere\n%\n"
                  "Fortune number 3: spam spam spam eggs.\n%\nlast one, no separator"),
        "beta": "samé text here\n%\n\n%\n",  # a whitespace variant of alpha's entry: dropped as a repeat
    }


def test_fortunes_fixture_streams_are_the_files(tmp_path):
    folder = write_fortunes(tmp_path / "fortunes", fixture_files())
    (folder / "notes.txt").write_text("not a fortune file: no .dat\n%\nnever read\n")
    write_fortunes(folder / "off", {"rude": "left out\n%\n"})
    os.symlink("alpha", folder / "alpha.u8")
    train, evals, info = build_fortunes(data_dir=folder, max_len=16)
    expected = distinct_entries(folder, ["alpha", "beta", "zeta"])
    assert len(expected) == 5 + 300 - 1  # zeta's Fortune number 3 repeats alpha's; beta's only entry repeats alpha's
    tr, ev = check_split(train, evals, expected)
    assert b"  spaced   out\n  art" in tr + ev and "samé  text\nhere".encode() in tr + ev  # inner spacing kept
    assert 10 <= len(ev) <= 55  # about 10 % of 303
    assert not any(b"never read" in e or b"left out" in e for e in tr + ev)
    assert (info.name, info.vocab_size, info.num_classes, info.token_unit, info.target, info.next_step) == \
        ("fortunes", 256, 256, "byte", "step_class", True)
    assert info.max_len == 16 and info.train_size == len(train) and info.eval_size == len(evals)
    assert "3 files" in info.note and "306 entries, 2 repeated ones dropped" in info.note
    assert f"{len(tr):,} entries" in info.note and f"{len(ev):,} entries" in info.note
    assert info.model_kwargs() == {"vocab_size": 256, "head": "none"}


def test_fortunes_split_ignores_file_names_order_and_seed(tmp_path):
    files = fixture_files()
    a = build_fortunes(data_dir=write_fortunes(tmp_path / "a", files))
    renamed = dict(zip(("m", "a", "z"), (files["zeta"], files["alpha"], files["beta"])))
    b = build_fortunes(data_dir=write_fortunes(tmp_path / "b", renamed), seed=7)
    held_a, held_b = set(split_stream(stream_of(a[1]))), set(split_stream(stream_of(b[1])))
    assert held_a == held_b  # the same texts held out, whatever the files are called and in what order they come
    again = build_fortunes(data_dir=tmp_path / "a", seed=123)
    assert torch.equal(stream_of(a[0]), stream_of(again[0])) and torch.equal(stream_of(a[1]), stream_of(again[1]))
    assert a[2].max_len == LM_WINDOW


def test_fortunes_missing_names_the_package(tmp_path):
    with pytest.raises(DatasetMissing, match=r"apt-get install -y fortunes"):
        build_fortunes(data_dir=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "text").write_text("no index next to me\n%\n")
    with pytest.raises(DatasetMissing, match=r"no fortune files .*empty"):
        build_fortunes(data_dir=tmp_path / "empty")


# ----------------------------------------------------------------------------------------------- installed corpus


@pytest.fixture(scope="module")
def fortunes():
    return build_fortunes()


@needs_fortunes
def test_installed_fortunes_match_the_raw_files(fortunes):
    train, evals, info = build_fortunes(max_len=2048)  # long windows: fewer items to walk through
    names = sorted(p.name for p in FORTUNES_DIR.iterdir()
                   if p.is_file() and not p.is_symlink() and (FORTUNES_DIR / f"{p.name}.dat").is_file())
    expected = distinct_entries(FORTUNES_DIR, names)
    tr, ev = check_split(train, evals, expected)
    assert 0.07 < len(ev) / len(expected) < 0.13
    n_eval_bytes = sum(len(e) + len(FORTUNES_SEPARATOR) for e in ev)
    assert f"{n_eval_bytes:,} bytes" in info.note and f"{n_eval_bytes - 1:,} bytes of the evaluation" in info.note
    assert len(expected) > 10_000 and info.eval_size == len(evals) == -(-(n_eval_bytes - 1) // 2048)
    _, default_evals, default_info = fortunes
    assert all(len(default_evals[i][1]) == LM_WINDOW for i in range(len(default_evals) - 1))
    assert default_info.max_len == LM_WINDOW and np.array_equal(default_evals.stream, evals.stream)


@needs_fortunes
def test_installed_fortunes_are_stable_and_subset_only_follows_seed(fortunes):
    train, evals, _ = fortunes
    other_train, other_evals, _ = build_fortunes(seed=5)
    assert np.array_equal(train.stream, other_train.stream) and np.array_equal(evals.stream, other_evals.stream)
    s1, e1, info = build_fortunes(subset=50, seed=1, max_len=64)
    s2, e2, _ = build_fortunes(subset=50, seed=2, max_len=64)
    assert len(s1) == info.train_size == 50
    assert not torch.equal(s1.indices, s2.indices) and len(e1) == len(e2) == info.eval_size
    full = TokenStreamDataset(train.stream, 64)
    for i in (0, 17, 49):  # a subset window is the full split's window at that position
        j = int(s1.indices[i])
        assert torch.equal(s1[i][0]["tokens"], full[j][0]["tokens"]) and torch.equal(s1[i][1], full[j][1])


@needs_fortunes
def test_windows_collate_with_ignored_padding(fortunes):
    _, evals, _ = fortunes
    short, long = evals[len(evals) - 1], evals[0]
    n = len(short[0]["tokens"])
    assert 1 <= n < LM_WINDOW  # the held-out stream does not divide evenly: its last window is kept, shorter
    inputs, targets = pad_collate([short, long])
    assert inputs["lengths"].tolist() == [n, LM_WINDOW] and targets.shape == (2, LM_WINDOW)
    assert (targets[0, n:] == IGNORE_INDEX).all() and (inputs["tokens"][0, n:] == PAD_TOKEN).all()
    assert torch.equal(targets[0, :n], short[1]) and torch.equal(targets[1], long[1])
    assert decode_bytes(targets[0]) == decode_bytes(short[1]) and decode_bytes(targets[0]).endswith("\n%\n")


# ----------------------------------------------------------------------------------------------- PTB


PTB = {"train": " the cat sat \n the dog ran <unk> \n", "valid": " the cat ran \n a bird sat \n",
       "test": " the dog sat \n"}


def write_split_files(folder: Path, pattern: str, texts: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in texts.items():
        (folder / pattern.format(split)).write_text(text, encoding="utf-8")
    return folder


def words_of(path: Path) -> list[str]:
    return [w for line in path.read_text(encoding="utf-8").splitlines() for w in line.split() + [EOS]]


def test_ptb_vocabulary_eos_and_targets(tmp_path):
    folder = write_split_files(tmp_path, "ptb.{}.txt", PTB)
    train, evals, info = build_ptb(tmp_path, max_len=3)
    assert info.classes == ["the", "cat", "sat", EOS, "dog", "ran", "<unk>"]  # training words, first appearance
    assert (info.vocab_size, info.num_classes, info.token_unit, info.name) == (7, 7, "word", "ptb")
    assert stream_of(train).tolist() == [0, 1, 2, 3, 0, 4, 5, 6, 3]
    assert [info.classes[i] for i in stream_of(train)] == words_of(folder / "ptb.train.txt")
    assert [len(train[i][1]) for i in range(len(train))] == [3, 3, 2]  # 8 predicted words in windows of 3
    assert train.window_lengths().tolist() == [3, 3, 2] and train.num_targets() == 8 and info.max_len == 3
    # 'a' and 'bird' are not training words: read as <unk>
    assert [info.classes[i] for i in stream_of(evals)] == ["the", "cat", "ran", EOS, "<unk>", "<unk>", "sat", EOS]
    assert "2 valid words outside it read as <unk>" in info.note and "ptb.valid.txt" in info.note
    _, test, test_info = build_ptb(tmp_path, split="test")
    assert [test_info.classes[i] for i in stream_of(test)] == words_of(folder / "ptb.test.txt")
    assert "ptb.test.txt" in test_info.note and test_info.max_len == 8  # the longest window of either split


def test_ptb_unknown_word_without_unk_is_an_error(tmp_path):
    write_split_files(tmp_path, "ptb.{}.txt", {"train": "the cat sat\n", "valid": "the zebra sat\n"})
    with pytest.raises(ValueError, match=r"ptb.valid.txt:1: the word 'zebra' is not in the training vocabulary"):
        build_ptb(tmp_path)


@pytest.mark.parametrize("sub, pattern", [("ptb", "ptb.{}.txt"), ("penn", "{}.txt"),
                                          ("simple-examples/data", "ptb.{}.txt")])
def test_ptb_found_in_the_standard_folders(tmp_path, sub, pattern):
    write_split_files(tmp_path / sub, pattern, PTB)
    train, _, info = build_ptb(tmp_path, subset=2, seed=0, max_len=2)
    assert len(train) == info.train_size == 2 and str(tmp_path / sub) in info.note


def test_ptb_missing_files_and_bad_split(tmp_path):
    with pytest.raises(DatasetMissing, match=r"ptb needs data_dir: .*ptb.train.txt"):
        build_ptb(None)
    write_split_files(tmp_path, "ptb.{}.txt", {"train": PTB["train"], "test": PTB["test"]})
    with pytest.raises(DatasetMissing, match=r"has no ptb.train.txt \+ ptb.valid.txt or train.txt \+ valid.txt"):
        build_ptb(tmp_path)
    with pytest.raises(ValueError, match=r"split must be one of"):
        build_ptb(tmp_path, split="train")


# ----------------------------------------------------------------------------------------------- WikiText-2


WIKI = {"train": " \n = Valkyria Chronicles III = \n \n Senjō no Valkyria 3 : <unk> Chronicles @-@ 3 . \n",
        "valid": " \n = Tower Building = \n \n The tower is 3 Chronicles high . \n",
        "test": " \n = Robert Boulter = \n"}


def test_wikitext2_word_level_keeps_blank_lines_as_eos(tmp_path):
    folder = write_split_files(tmp_path / "wikitext-2", "wiki.{}.tokens", WIKI)
    write_split_files(tmp_path / "wikitext-2-raw", "wiki.{}.raw", {s: t.replace(" @-@ ", "-") for s, t in WIKI.items()})
    train, evals, info = build_wikitext2(tmp_path)  # both folders present: the word-level benchmark
    assert (info.name, info.token_unit) == ("wikitext2", "word")
    assert [info.classes[i] for i in stream_of(train)] == words_of(folder / "wiki.train.tokens")
    assert info.classes[:2] == [EOS, "="] and stream_of(train)[:1].tolist() == [0]  # the blank first line
    assert [info.classes[i] for i in stream_of(evals)][:6] == [EOS, "=", "<unk>", "<unk>", "=", EOS]
    assert "wiki.valid.tokens" in info.note


def test_wikitext2_raw_is_byte_level(tmp_path):
    raw = write_split_files(tmp_path / "wikitext-2-raw", "wiki.{}.raw", WIKI)
    write_split_files(tmp_path / "wikitext-2", "wiki.{}.tokens", WIKI)
    for data_dir, kw in ((raw, {}), (tmp_path, {"raw": True})):
        train, evals, info = build_wikitext2(data_dir, max_len=8, split="test", **kw)
        assert (info.name, info.token_unit, info.vocab_size, info.classes) == ("wikitext2_raw", "byte", 256, [])
        assert stream_of(train).to(torch.uint8).numpy().tobytes() == (raw / "wiki.train.raw").read_bytes()
        assert decode_bytes(stream_of(evals)) == WIKI["test"] and "wiki.test.raw" in info.note
    with pytest.raises(DatasetMissing, match=r"has no wiki.train.tokens"):
        build_wikitext2(raw, raw=False)
    with pytest.raises(DatasetMissing, match=r"wikitext-2-raw/ \(wiki.train.raw"):
        build_wikitext2(tmp_path / "nothing")


# ----------------------------------------------------------------------------------------------- helpers


def test_decode_bytes_and_stream_checks():
    ids = torch.tensor(list("né%".encode()) + [IGNORE_INDEX, PAD_TOKEN])
    assert decode_bytes(ids) == "né%" and decode_bytes(np.array([0xC3])) == "\ufffd"
    with pytest.raises(ValueError, match=r"< 256"):
        decode_bytes([300])
    with pytest.raises(ValueError, match=r"at least 2 tokens"):
        TokenStreamDataset(np.array([5], dtype=np.uint8), 4)
    with pytest.raises(AttributeError, match=r"no whole-sequence labels"):
        _ = TokenStreamDataset(np.arange(5, dtype=np.int32), 2).targets
