"""The Long Range Arena release files in their standard layouts, read as token sequences (nothing downloaded):
ListOps (``listops-1000/basic_{train,test}.tsv``), Text (IMDb's ``aclImdb/``, as bytes) and Retrieval (AAN's
``tsv_data/new_aan_pairs.{train,test}.tsv``, document pairs as bytes). Each set evaluates on its test file."""

from __future__ import annotations

import ast
from pathlib import Path

from .images import DatasetMissing
from .listops import LISTOPS_VOCAB, encode_listops
from .sequence_base import SeqInfo, SequenceSets, TokenSequenceDataset, apply_subset

__all__ = ["RETRIEVAL_MAX_LEN", "TEXT_MAX_LEN", "build_lra_listops", "build_lra_retrieval", "build_lra_text"]

TEXT_MAX_LEN = 4096  # LRA Text
RETRIEVAL_MAX_LEN = 4000  # LRA Retrieval, per document


def _first_dir(candidates: list[Path], needed: tuple[str, ...]) -> Path | None:
    return next((d for d in candidates if all((d / n).exists() for n in needed)), None)


def _release_folder(name: str, data_dir: Path | None, subdirs: tuple[str, ...], need: tuple[str, str],
                    layout: str) -> Path:
    """The first of ``data_dir`` and ``data_dir/<subdir>`` that holds both files of ``need``; the errors name the
    dataset ``name`` and its ``layout``."""
    if data_dir is None:
        raise DatasetMissing(f"{name} needs data_dir: {layout}")
    root = _first_dir([data_dir, *(data_dir / sub for sub in subdirs)], need)
    if root is None:
        raise DatasetMissing(f"{data_dir} has no {need[0]} / {need[1]}; expected {layout}")
    return root


def _read_listops_tsv(path: Path, max_len: int | None) -> tuple[list[bytes], list[int]]:
    docs, labels = [], []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for no, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if no == 1 and line.strip().lower().replace(" ", "") == "source\ttarget":
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise ValueError(f"{path}:{no}: expected 2 tab-separated columns (Source, Target), got {len(parts)}")
            try:
                label = int(parts[1].strip())
            except ValueError:
                raise ValueError(f"{path}:{no}: Target {parts[1][:20]!r} is not an integer") from None
            if not 0 <= label <= 9:
                raise ValueError(f"{path}:{no}: Target {label} is not a digit 0-9")
            docs.append(encode_listops(parts[0], f"{path}:{no}")[:max_len])
            labels.append(label)
    if not docs:
        raise ValueError(f"{path} holds no examples")
    return docs, labels


def build_lra_listops(data_dir: Path | None, subset: int | None, seed: int, max_len: int | None) -> SequenceSets:
    """LRA ListOps: ``basic_train.tsv`` for training, ``basic_test.tsv`` for evaluation, found in ``data_dir``,
    ``data_dir/listops-1000`` or ``data_dir/lra_release/listops-1000``; tokens are :data:`LISTOPS_VOCAB` ids."""
    layout = ("the LRA release folder listops-1000/ holding basic_train.tsv, basic_val.tsv and basic_test.tsv "
              "(tab-separated, header 'Source\\tTarget')")
    root = _release_folder("lra_listops", data_dir, ("listops-1000", "lra_release/listops-1000"),
                           ("basic_train.tsv", "basic_test.tsv"), layout)
    xtr, ytr = _read_listops_tsv(root / "basic_train.tsv", max_len)
    xte, yte = _read_listops_tsv(root / "basic_test.tsv", max_len)
    classes = [str(d) for d in range(10)]
    train = apply_subset(TokenSequenceDataset(xtr, ytr, classes), subset, seed, 10)
    evals = TokenSequenceDataset(xte, yte, classes)
    info = SeqInfo(
        name="lra_listops", num_classes=10, input_kind="tokens", vocab_size=len(LISTOPS_VOCAB),
        max_len=max(train.longest(), evals.longest()), classes=classes, train_size=len(train), eval_size=len(evals),
        simulated=True,
        note=(f"LRA ListOps release files in {root} (synthetic by construction): basic_train.tsv for training, "
              f"basic_test.tsv for evaluation (basic_val.tsv unused); '(' ')' dropped, tokens are LISTOPS_VOCAB ids"
              + (f"; first {max_len} tokens kept" if max_len else "")),
    )
    return train, evals, info


def build_lra_text(data_dir: Path | None, subset: int | None, seed: int, max_len: int | None) -> SequenceSets:
    """LRA Text: the IMDb reviews of ``data_dir`` (or ``data_dir/aclImdb``) as bytes, first ``max_len`` bytes
    (default :data:`TEXT_MAX_LEN`)."""
    layout = "the IMDb release aclImdb/ with train/pos, train/neg, test/pos and test/neg folders of *.txt reviews"
    if data_dir is None:
        raise DatasetMissing(f"lra_text needs data_dir: {layout}")
    need = ("train/pos", "train/neg", "test/pos", "test/neg")
    root = _first_dir([data_dir, data_dir / "aclImdb"], need)
    if root is None:
        raise DatasetMissing(f"{data_dir} lacks {', '.join(need)}; expected {layout}")
    limit = TEXT_MAX_LEN if max_len is None else max_len
    classes = ["neg", "pos"]

    def read(split: str) -> tuple[list[bytes], list[int]]:
        docs, labels = [], []
        for label, cls in enumerate(classes):
            files = sorted((root / split / cls).glob("*.txt"))
            for p in files:
                doc = p.read_bytes()
                if not doc:
                    raise ValueError(f"{p} is empty")
                docs.append(doc[:limit])
                labels.append(label)
        if not docs:
            raise DatasetMissing(f"{root / split} holds no pos/*.txt or neg/*.txt reviews; expected {layout}")
        return docs, labels

    xtr, ytr = read("train")
    xte, yte = read("test")
    train = apply_subset(TokenSequenceDataset(xtr, ytr, classes), subset, seed, 2)
    evals = TokenSequenceDataset(xte, yte, classes)
    info = SeqInfo(
        name="lra_text", num_classes=2, input_kind="tokens", vocab_size=256,
        max_len=max(train.longest(), evals.longest()), classes=classes, train_size=len(train), eval_size=len(evals),
        note=(f"LRA Text: IMDb reviews from {root} (train/ for training, test/ for evaluation, unsup/ unused) as "
              f"UTF-8 bytes, token id = byte value; first {limit} bytes kept"),
    )
    return train, evals, info


def _aan_text(field_: bytes, where: str) -> bytes:
    """A text column of the AAN files: a Python bytes literal ``b'...'`` (as in the LRA release) is decoded to its
    bytes; anything else is taken as raw bytes."""
    f = field_.strip()
    if len(f) >= 3 and f[:1] == b"b" and f[1:2] in (b"'", b'"') and f[-1:] == f[1:2]:
        try:
            value = ast.literal_eval(f.decode("ascii"))
        except (ValueError, SyntaxError, UnicodeDecodeError) as e:
            raise ValueError(f"{where}: a text column looks like a bytes literal but is not one: {e}") from None
        if isinstance(value, bytes):
            return value
    return field_


def _read_aan_tsv(path: Path, limit: int) -> tuple[list[bytes], list[bytes], list[int], int]:
    docs1, docs2, labels, skipped = [], [], [], 0
    with open(path, "rb") as f:
        for no, line in enumerate(f, 1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            parts = line.split(b"\t")
            if len(parts) != 5:
                raise ValueError(f"{path}:{no}: expected 5 tab-separated columns (label, id1, id2, text1, text2), "
                                 f"got {len(parts)}")
            try:
                value = float(parts[0])
            except ValueError:
                if no == 1 and parts[0].strip().lower() == b"label":
                    continue  # a header line
                raise ValueError(f"{path}:{no}: label {parts[0][:20]!r} is not a number") from None
            if value not in (0.0, 1.0):
                raise ValueError(f"{path}:{no}: label {value} is not 0 or 1")
            where = f"{path}:{no}"
            a, b = _aan_text(parts[3], where), _aan_text(parts[4], where)
            if not a or not b:
                skipped += 1
                continue
            docs1.append(a[:limit])
            docs2.append(b[:limit])
            labels.append(int(value))
    if not docs1:
        raise ValueError(f"{path} holds no document pairs")
    return docs1, docs2, labels, skipped


def build_lra_retrieval(data_dir: Path | None, subset: int | None, seed: int, max_len: int | None) -> SequenceSets:
    """LRA Retrieval: AAN document pairs of ``data_dir`` (or ``data_dir/tsv_data``,
    ``data_dir/lra_release/tsv_data``) as bytes, first ``max_len`` bytes of each (default
    :data:`RETRIEVAL_MAX_LEN`)."""
    layout = ("the LRA release folder tsv_data/ holding new_aan_pairs.train.tsv, new_aan_pairs.eval.tsv and "
              "new_aan_pairs.test.tsv (no header; tab-separated label, id1, id2, text1, text2)")
    root = _release_folder("lra_retrieval", data_dir, ("tsv_data", "lra_release/tsv_data"),
                           ("new_aan_pairs.train.tsv", "new_aan_pairs.test.tsv"), layout)
    limit = RETRIEVAL_MAX_LEN if max_len is None else max_len
    a, b, ytr, skip_tr = _read_aan_tsv(root / "new_aan_pairs.train.tsv", limit)
    c, d, yte, skip_te = _read_aan_tsv(root / "new_aan_pairs.test.tsv", limit)
    classes = ["0", "1"]
    train = apply_subset(TokenSequenceDataset(a, ytr, classes, docs2=b), subset, seed, 2)
    evals = TokenSequenceDataset(c, yte, classes, docs2=d)
    skipped = f"; skipped {skip_tr} train / {skip_te} test pairs with an empty document" if skip_tr + skip_te else ""
    info = SeqInfo(
        name="lra_retrieval", num_classes=2, input_kind="tokens", vocab_size=256,
        max_len=max(train.longest(), evals.longest()), classes=classes, train_size=len(train), eval_size=len(evals),
        retrieval=True,
        note=(f"LRA Retrieval: ACL Anthology Network citation pairs from {root} (new_aan_pairs.train.tsv for "
              f"training, new_aan_pairs.test.tsv for evaluation, .eval.tsv unused); b'...' text literals decoded, "
              f"token id = byte value, first {limit} bytes of each document kept{skipped}"),
    )
    return train, evals, info
