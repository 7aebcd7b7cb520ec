"""ListOps generated locally with the Long Range Arena grammar (``lra_benchmarks/data/listops.py``): the
vocabulary, the evaluator, the generator (:class:`ListOpsDataset`, :func:`build_listops`) and the encoder of LRA's
release text into the same token ids (:func:`encode_listops`, used by :mod:`statelayers.data.lra`).

The data are synthetic by definition (``SeqInfo.simulated`` is True) and the same for every run seed."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import numpy as np
import torch

from .sequence_base import SeqInfo, SequenceDataset, apply_subset, check_max_len

__all__ = [
    "LISTOPS_EVAL_SIZE",
    "LISTOPS_FULL_TRAIN_SIZE",
    "LISTOPS_TRAIN_SIZE",
    "LISTOPS_VOCAB",
    "ListOpsDataset",
    "build_listops",
    "encode_listops",
    "listops_decode",
    "listops_value",
]

LISTOPS_VOCAB: tuple[str, ...] = tuple(str(d) for d in range(10)) + ("[MIN", "[MAX", "[MED", "[SM", "]")
_LO_MIN, _LO_MAX, _LO_MED, _LO_SM, _LO_END = 10, 11, 12, 13, 14
LISTOPS_TRAIN_SIZE, LISTOPS_EVAL_SIZE = 20_000, 2_000
LISTOPS_FULL_TRAIN_SIZE = 96_000  # LRA: 96,000 train / 2,000 val / 2,000 test
LISTOPS_MIN_LENGTH, LISTOPS_MAX_LENGTH = 500, 2000  # LRA keeps trees with min_length < tokens < max_length
LISTOPS_MAX_DEPTH, LISTOPS_MAX_ARGS = 10, 10
LISTOPS_OP_PROB = 0.25  # LRA's VALUE_P: a node above the depth limit is an operator with this probability
LISTOPS_DATA_SEED = 0  # the generated sets are the same for every run seed


def _median_floor(vals: list[int]) -> int:
    s = sorted(vals)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) // 2  # LRA: int(np.median(...)), values >= 0


def _apply_op(op: str, vals: list[int]) -> int:
    if op == "[MIN":
        return min(vals)
    if op == "[MAX":
        return max(vals)
    if op == "[MED":
        return _median_floor(vals)
    if op == "[SM":
        return sum(vals) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def listops_value(expr: str | Sequence[str]) -> int:
    """The value (0-9) of a ListOps expression: a string such as ``"[MAX 2 9 [MIN 4 7 ] 0 ]"`` (LRA's ``(``/``)``
    tree brackets are ignored) or a sequence of token strings. ``[MIN``, ``[MAX``, ``[MED`` (median of the
    arguments, the lower-rounded mean of the middle two for an even count, as LRA's ``int(np.median)``) and ``[SM``
    (sum modulo 10), each closed by ``]``; arguments are digits or expressions. ``ValueError`` if malformed."""
    if isinstance(expr, str):
        tokens = expr.replace("(", " ").replace(")", " ").replace("]", " ] ").split()
    else:
        tokens = [t for t in expr if t not in ("(", ")")]
    stack: list[tuple[str, list[int]]] = []
    result = None
    for tok in tokens:
        if tok in ("[MIN", "[MAX", "[MED", "[SM"):
            stack.append((tok, []))
            continue
        if tok == "]":
            if not stack:
                raise ValueError("']' closes nothing")
            op, args = stack.pop()
            if not args:
                raise ValueError(f"{op} has no arguments")
            value = _apply_op(op, args)
        elif len(tok) == 1 and tok.isdigit():
            value = int(tok)
        else:
            raise ValueError(f"unknown ListOps token {tok!r}")
        if stack:
            stack[-1][1].append(value)
        elif result is None:
            result = value
        else:
            raise ValueError("more than one top-level expression")
    if stack:
        raise ValueError(f"{len(stack)} operator(s) not closed with ']'")
    if result is None:
        raise ValueError("empty expression")
    return result


def listops_decode(ids) -> str:
    """Token ids → the expression as a space-separated string (without LRA's ``(``/``)``)."""
    return " ".join(LISTOPS_VOCAB[int(i)] for i in ids)


class _TooLong(Exception):
    pass


def _listops_sample(rng: random.Random, min_length: int, max_length: int, max_depth: int,
                    max_args: int) -> tuple[bytes, int]:
    """One expression drawn from LRA's grammar, rejected until ``min_length < tokens < max_length``.

    A node at depth < ``max_depth`` (the root has depth 1) is an operator with probability 0.25, else a digit
    0-9; an operator picks 2..max_args arguments and one of MIN/MAX/MED/SM uniformly, and is written
    ``op arg ... ]``. Returns (token ids as bytes, value)."""
    rand = rng.random
    out: list[int] = []
    push = out.append
    spread = max_args - 1

    def operator(depth: int) -> int:
        if len(out) >= max_length:
            raise _TooLong
        k = 2 + int(rand() * spread)
        op = _LO_MIN + int(rand() * 4)
        push(op)
        vals = []
        nest = depth + 1 < max_depth
        for _ in range(k):
            if nest and rand() < LISTOPS_OP_PROB:
                vals.append(operator(depth + 1))
            else:
                v = int(rand() * 10)
                push(v)
                vals.append(v)
        push(_LO_END)
        if op == _LO_MIN:
            return min(vals)
        if op == _LO_MAX:
            return max(vals)
        if op == _LO_MED:
            return _median_floor(vals)
        return sum(vals) % 10

    while True:
        if not (max_depth > 1 and rand() < LISTOPS_OP_PROB):
            continue  # the root is a digit: one token, always too short
        out.clear()
        try:
            value = operator(1)
        except _TooLong:
            continue
        if min_length < len(out) < max_length:
            return bytes(out), value


class ListOpsDataset(SequenceDataset):
    """``size`` ListOps expressions generated on demand with the LRA grammar (``lra_benchmarks/data/listops.py``:
    max depth 10, up to 10 arguments, operators MIN/MAX/MED/SM, kept if 500 < tokens < 2000).

    Item ``j`` is drawn from its own ``random.Random(f"listops:{data_seed}:{split}:{j}")``, so it depends only on
    (data_seed, split, j, grammar settings): building the dataset is instant, any worker can produce any item, and
    the eval set does not move when the training size changes. Items are memoised once generated (about 1 KB each).
    Tokens are ids into :data:`LISTOPS_VOCAB` (digits 0-9 are ids 0-9, then ``[MIN [MAX [MED [SM ]``); LRA's
    ``(``/``)`` tree brackets carry no information and are not emitted. ``targets`` generates every item.
    """

    def __init__(self, size: int, *, split: str = "train", data_seed: int = LISTOPS_DATA_SEED,
                 min_length: int = LISTOPS_MIN_LENGTH, max_length: int = LISTOPS_MAX_LENGTH,
                 max_depth: int = LISTOPS_MAX_DEPTH, max_args: int = LISTOPS_MAX_ARGS, max_len: int | None = None):
        if size < 1:
            raise ValueError(f"size={size} must be positive")
        if max_args < 2 or max_depth < 2:
            raise ValueError(f"max_args={max_args} and max_depth={max_depth} must be >= 2")
        if not 0 <= min_length < max_length - 3:
            raise ValueError(f"need 0 <= min_length < max_length - 3, got {min_length}, {max_length}")
        # the longest tree the grammar can produce must be able to exceed min_length
        most = 1
        for _ in range(max_depth - 1):
            most = 2 + max_args * most
        if most <= min_length:
            raise ValueError(f"max_depth={max_depth}, max_args={max_args} cannot produce more than {most} tokens, "
                             f"min_length={min_length}")
        self.size, self.split, self.data_seed = int(size), str(split), int(data_seed)
        self.min_length, self.max_length = int(min_length), int(max_length)
        self.max_depth, self.max_args = int(max_depth), int(max_args)
        self.max_len = max_len
        self.classes = [str(d) for d in range(10)]
        self.indices = torch.arange(self.size)
        self._memo: dict[int, tuple[bytes, int]] = {}

    def sample(self, j: int) -> tuple[bytes, int]:
        """(token ids as bytes, label) of source item ``j``, untruncated."""
        hit = self._memo.get(j)
        if hit is None:
            rng = random.Random(f"listops:{self.data_seed}:{self.split}:{j}")
            hit = _listops_sample(rng, self.min_length, self.max_length, self.max_depth, self.max_args)
            self._memo[j] = hit
        return hit

    def _label(self, j: int) -> int:
        return self.sample(j)[1]

    def _inputs(self, j: int) -> dict[str, torch.Tensor]:
        ids = np.frombuffer(self.sample(j)[0], dtype=np.uint8)[: self.max_len]
        return {"tokens": torch.from_numpy(ids.astype(np.int64))}

    @property
    def targets(self) -> torch.Tensor:
        return torch.tensor([self.sample(int(j))[1] for j in self.indices], dtype=torch.long)


def build_listops(train_size: int = LISTOPS_TRAIN_SIZE, eval_size: int = LISTOPS_EVAL_SIZE, *,
                  data_seed: int = LISTOPS_DATA_SEED, min_length: int = LISTOPS_MIN_LENGTH,
                  max_length: int = LISTOPS_MAX_LENGTH, max_depth: int = LISTOPS_MAX_DEPTH,
                  max_args: int = LISTOPS_MAX_ARGS, subset: int | None = None, seed: int = 0,
                  max_len: int | None = None, name: str = "listops") -> tuple[ListOpsDataset, ListOpsDataset, SeqInfo]:
    """Generated ListOps (see :class:`ListOpsDataset`) with explicit sizes and grammar settings. ``data_seed``
    picks the expressions; ``seed`` only the ``subset`` (which generates the whole training split to read its
    labels, about 1 ms per expression)."""
    max_len = check_max_len(max_len)
    grammar = dict(data_seed=data_seed, min_length=min_length, max_length=max_length, max_depth=max_depth,
                   max_args=max_args, max_len=max_len)
    train = ListOpsDataset(train_size, split="train", **grammar)
    evals = ListOpsDataset(eval_size, split="eval", **grammar)
    train = apply_subset(train, subset, seed, 10)
    longest = max_length - 1 if max_len is None else min(max_length - 1, max_len)
    info = SeqInfo(
        name=name, num_classes=10, input_kind="tokens", vocab_size=len(LISTOPS_VOCAB), max_len=longest,
        classes=[str(d) for d in range(10)], train_size=len(train), eval_size=len(evals), simulated=True,
        note=(f"simulated: ListOps generated locally with the Long Range Arena grammar (data seed {data_seed}; "
              f"max depth {max_depth}, max args {max_args}, MIN/MAX/MED/SM, {min_length} < tokens < {max_length}); "
              f"{train_size} train / {eval_size} eval expressions; max_len is the length bound"
              + (f"; first {max_len} tokens kept" if max_len else "")),
    )
    return train, evals, info


# Encoding LRA's release text: each operator becomes one letter, so that every token is one character and the
# ids come from one table lookup.
_LO_LETTERS = (("[MIN", "a"), ("[MAX", "b"), ("[MED", "c"), ("[SM", "d"))
_LO_LUT = np.full(256, 255, dtype=np.uint8)
_LO_LUT[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
_LO_LUT[np.frombuffer(b"abcd", np.uint8)] = np.arange(_LO_MIN, _LO_SM + 1, dtype=np.uint8)
_LO_LUT[ord("]")] = _LO_END
_TWO_CHARS = re.compile(r"\S\S")
_SPACE = re.compile(r"\s+")


def encode_listops(source: str, where: str) -> bytes:
    """LRA ListOps source (``( ( [MAX 2 ) 9 ) ] )``-style) → ids into LISTOPS_VOCAB, as bytes; ``where`` (file and
    line) is named in the ``ValueError`` for anything else."""
    s = source.replace("(", " ").replace(")", " ")
    for name, letter in _LO_LETTERS:
        s = s.replace(name, letter)
    bad = _TWO_CHARS.search(s)
    if bad is None:
        compact = _SPACE.sub("", s)
        raw = compact.encode("ascii", errors="replace")
        ids = _LO_LUT[np.frombuffer(raw, dtype=np.uint8)]
        if not (ids == 255).any() and ids.size:
            return ids.tobytes()
    tokens = [t for t in source.split() if t not in ("(", ")") and t not in LISTOPS_VOCAB]
    raise ValueError(f"{where}: not a ListOps expression (tokens outside {list(LISTOPS_VOCAB)}: {tokens[:5]})")
