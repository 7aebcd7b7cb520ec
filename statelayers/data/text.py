"""Text for causal language modelling, read offline: the Debian ``fortunes`` corpus as bytes
(:func:`build_fortunes`) and the official Penn Treebank and WikiText-2 files as words (:func:`build_ptb`,
:func:`build_wikitext2`; WikiText-2's ``.raw`` files as bytes).

Every set is one token stream per split, cut into windows by :class:`TokenStreamDataset`: item ``j`` is
``{"tokens": stream[jL : jL+L]}`` with target ``stream[jL+1 : jL+L+1]`` (the next token of each position), so
consecutive windows share one boundary token, the inputs of the windows tile the stream and so do their targets:
every token of a split but its first is predicted exactly once. The last window is shorter when the stream does not
divide evenly (:func:`~statelayers.data.sequence_base.pad_collate` pads its targets with ``IGNORE_INDEX``). ``L``
is ``max_len`` (default :data:`LM_WINDOW`). Each window is an independent sequence: the context restarts at every
window, so perplexities are those of a model that sees at most ``L`` tokens back, higher than the numbers of
word-LM papers that carry the hidden state across windows (a longer ``max_len`` narrows the gap).

The datasets are the same for every run ``seed``; ``seed`` only draws a ``subset`` of the training windows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from .images import DatasetMissing
from .sequence_base import SeqInfo, SequenceDataset, SequenceSets, apply_subset, check_max_len

__all__ = [
    "EOS",
    "FORTUNES_DIR",
    "FORTUNES_EVAL_PERCENT",
    "FORTUNES_SEPARATOR",
    "LM_WINDOW",
    "TokenStreamDataset",
    "build_fortunes",
    "build_ptb",
    "build_wikitext2",
    "decode_bytes",
    "fortune_entries",
]

LM_WINDOW = 256  # tokens of input per window when max_len is None
FORTUNES_DIR = Path("/usr/share/games/fortunes")  # Debian's fortunes / fortunes-min packages
FORTUNES_SEPARATOR = b"\n%\n"  # written after every entry: a split's stream is itself a fortune file
FORTUNES_EVAL_PERCENT = 10  # share of the distinct entries held out for evaluation
EOS = "<eos>"  # appended to every line of the word-level files (as PyTorch's word_language_model example does)
_UNK = "<unk>"  # the unknown-word token of the PTB / WikiText-2 releases
_SPLITS = ("valid", "test")


class TokenStreamDataset(SequenceDataset):
    """One token stream (uint8 bytes or int32 word ids, ``(N,)``) cut into next-token windows of ``window``
    tokens, see the module docstring. Holding the stream and cutting windows on demand keeps one copy of the text
    in memory (one byte per byte for the byte-level sets) instead of two int64 arrays per window."""

    def __init__(self, stream: np.ndarray, window: int, classes: Iterable[str] = ()):
        stream = np.ascontiguousarray(stream)
        if stream.ndim != 1 or stream.dtype.kind not in "iu":
            raise ValueError(f"expected a 1-d integer token stream, got {stream.dtype} {stream.shape}")
        if stream.size < 2:
            raise ValueError(f"a token stream needs at least 2 tokens (an input and its next token), got {stream.size}")
        if int(window) < 1:
            raise ValueError(f"window={window} must be a positive number of tokens")
        self.stream, self.window = stream, int(window)
        self.classes = list(classes)
        # windows start every `window` tokens; the last one starts before the last token (it needs one target)
        self.indices = torch.arange(-(-(stream.size - 1) // self.window))

    @property
    def targets(self) -> torch.Tensor:
        raise AttributeError("per-step targets have no whole-sequence labels")

    def span(self, j: int) -> tuple[int, int]:
        """(start, stop) of source window ``j``'s inputs in the stream; its targets are ``[start+1, stop+1)``."""
        start = j * self.window
        return start, min(start + self.window, self.stream.size - 1)

    def _inputs(self, j: int) -> dict[str, torch.Tensor]:
        start, stop = self.span(j)
        return {"tokens": torch.from_numpy(self.stream[start:stop].astype(np.int64))}

    def _label(self, j: int) -> torch.Tensor:
        start, stop = self.span(j)
        return torch.from_numpy(self.stream[start + 1:stop + 1].astype(np.int64))

    def window_lengths(self) -> torch.Tensor:
        """Tokens in each window this dataset shows (all ``window`` but the stream's last, which may be shorter)."""
        starts = self.indices * self.window
        return (starts + self.window).clamp(max=self.stream.size - 1) - starts

    def longest(self) -> int:
        return int(self.window_lengths().max()) if len(self) else 0

    def num_targets(self) -> int:
        """Tokens predicted over the windows this dataset shows (the count the per-token metrics average over)."""
        return int(self.window_lengths().sum())


def decode_bytes(ids) -> str:
    """Byte ids (a tensor, array or list) → text (UTF-8, undecodable bytes as U+FFFD). Negative ids — padding
    (``PAD_TOKEN``) and ignored targets (``IGNORE_INDEX``) — are skipped."""
    a = np.asarray(ids.detach().cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).reshape(-1)
    a = a[a >= 0]
    if (a > 255).any():
        raise ValueError(f"byte ids must be < 256, got {int(a.max())}")
    return a.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


def _windows(name: str, train_stream: np.ndarray, eval_stream: np.ndarray, window: int, classes: list[str],
             subset: int | None, seed: int) -> tuple[TokenStreamDataset, TokenStreamDataset]:
    for split, s in (("training", train_stream), ("evaluation", eval_stream)):
        if s.size < 2:
            raise ValueError(f"{name}: the {split} split holds {s.size} token(s); at least 2 are needed")
    train = apply_subset(TokenStreamDataset(train_stream, window, classes), subset, seed, 0)
    return train, TokenStreamDataset(eval_stream, window, classes)


def _lm_info(name: str, train: TokenStreamDataset, evals: TokenStreamDataset, vocab_size: int, classes: list[str],
             unit: str, note: str) -> SeqInfo:
    return SeqInfo(
        name=name, num_classes=vocab_size, input_kind="tokens", vocab_size=vocab_size,
        max_len=max(train.longest(), evals.longest()), classes=classes, train_size=len(train), eval_size=len(evals),
        target="step_class", next_step=True, token_unit=unit,
        note=(f"{note}; windows of {train.window} {unit}s (each predicts the next {unit} of its inputs, context "
              f"restarts at every window): {len(train)} training windows ({train.num_targets():,} predicted "
              f"{unit}s), {len(evals)} evaluation windows; the per-{unit} metrics average over all "
              f"{evals.num_targets():,} {unit}s of the evaluation stream but its first"),
    )


# ----------------------------------------------------------------------------------------------- fortunes


def fortune_entries(data: bytes) -> list[bytes]:
    """The entries of a fortune file (the ``strfile`` format: entries separated by lines holding only ``%``), each
    without its leading and trailing blank lines; empty entries are dropped. Inner whitespace is kept as written:
    ASCII art and indented verse depend on it."""
    entries, lines = [], []
    for line in data.split(b"\n") + [b"%"]:  # a final separator closes the last entry
        if line.rstrip(b"\r") != b"%":
            lines.append(line)
            continue
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        if lines:
            entries.append(b"\n".join(lines))
        lines = []
    return entries


def _entry_key(entry: bytes) -> bytes:
    # entries that differ only in spacing or line breaks are one text: they are deduplicated and split together
    return b" ".join(entry.split())


def _held_out(key: bytes) -> bool:
    # the split depends on the text alone (not on file order, file names or the run seed); blake2b, unlike
    # Python's hash(), is the same in every process
    h = int.from_bytes(hashlib.blake2b(key, digest_size=8, person=b"sl-fortunes").digest(), "little")
    return h % 100 < FORTUNES_EVAL_PERCENT


def _fortune_files(folder: Path) -> list[Path]:
    # a fortune database is a text file with its strfile index NAME.dat next to it (what `fortune` itself reads);
    # the NAME.u8 symlinks are the same files again, and subfolders (off/: the offensive set, translations) are
    # left out by reading the top level only
    return sorted(p for p in folder.iterdir()
                  if p.suffix != ".dat" and p.is_file() and not p.is_symlink()
                  and p.with_name(p.name + ".dat").is_file())


def build_fortunes(subset: int | None = None, seed: int = 0, max_len: int | None = None,
                   data_dir: str | Path | None = None) -> SequenceSets:
    """Byte-level language modelling on Debian's ``fortunes`` corpus (``apt-get install -y fortunes``), read from
    ``data_dir`` (default :data:`FORTUNES_DIR`).

    * **Files**: every fortune database at the folder's top level (a file with its ``.dat`` index), in name order;
      the ``.u8`` symlinks and subfolders such as ``off/`` are not read.
    * **Entries** (:func:`fortune_entries`) that repeat an earlier one up to whitespace are dropped, so that no
      text is in both splits.
    * **Split**: an entry is held out for evaluation when a hash of its whitespace-normalised text falls in the
      first :data:`FORTUNES_EVAL_PERCENT` of 100 buckets (about 10 %): the same split on every machine and for every
      run seed, whatever the order of the files, and an entry added to the corpus does not move the others.
    * **Streams**: each split is its entries, in file order, each followed by :data:`FORTUNES_SEPARATOR`
      (``"\\n%\\n"``, so the model also learns where a fortune ends), as UTF-8 bytes: token id = byte value,
      vocabulary 256.
    * **Windows** of ``max_len`` bytes (default :data:`LM_WINDOW` = 256, about one and a half median entries;
      see the module docstring): bits per byte is measured over every byte of the held-out stream but its first,
      each predicted once, from the bytes before it in its window (the first byte of a window from that byte
      alone).
    """
    max_len = check_max_len(max_len)
    folder = FORTUNES_DIR if data_dir is None else Path(data_dir).expanduser()
    files = _fortune_files(folder) if folder.is_dir() else []
    if not files:
        raise DatasetMissing(f"no fortune files (NAME with NAME.dat) in {folder}; install Debian's corpus with "
                             f"`sudo apt-get install -y fortunes`")
    seen: set[bytes] = set()
    parts: dict[bool, list[bytes]] = {False: [], True: []}
    counts = {False: 0, True: 0}
    total = duplicates = 0
    for path in files:
        for entry in fortune_entries(path.read_bytes()):
            total += 1
            key = _entry_key(entry)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            held = _held_out(key)
            parts[held].append(entry + FORTUNES_SEPARATOR)
            counts[held] += 1
    train_bytes, eval_bytes = b"".join(parts[False]), b"".join(parts[True])
    digest = hashlib.blake2b(train_bytes + b"\0" + eval_bytes, digest_size=6).hexdigest()
    window = max_len or LM_WINDOW
    train, evals = _windows("fortunes", np.frombuffer(train_bytes, np.uint8), np.frombuffer(eval_bytes, np.uint8),
                            window, [], subset, seed)
    note = (f"Debian fortunes corpus, {len(files)} files in {folder} ({', '.join(p.name for p in files)}): "
            f"{total:,} entries, {duplicates:,} repeated ones dropped; {counts[False]:,} entries "
            f"({len(train_bytes):,} bytes) for training, {counts[True]:,} entries ({len(eval_bytes):,} bytes) held "
            f"out by a hash of their text (~{FORTUNES_EVAL_PERCENT} %); each entry followed by '\\n%\\n', UTF-8 "
            f"bytes as tokens (vocab 256); corpus digest {digest}")
    return train, evals, _lm_info("fortunes", train, evals, 256, [], "byte", note)


# ----------------------------------------------------------------------------------------------- PTB, WikiText-2


def _lm_files(name: str, data_dir: str | Path | None, subdirs: tuple[str, ...], patterns: tuple[str, ...],
              split: str, layout: str) -> tuple[Path, Path]:
    """(training file, evaluation file) of the first folder among ``data_dir`` and ``data_dir/<subdir>`` that holds
    ``train`` and ``split`` under one of the file name ``patterns`` (``"ptb.{}.txt"``: ``{}`` is the split)."""
    if split not in _SPLITS:
        raise ValueError(f"{name}: split must be one of {_SPLITS} (train is always the training split), got {split!r}")
    if data_dir is None:
        raise DatasetMissing(f"{name} needs data_dir: {layout}")
    root = Path(data_dir).expanduser()
    for folder in (root, *(root / sub for sub in subdirs)):
        for pattern in patterns:
            train, evals = folder / pattern.format("train"), folder / pattern.format(split)
            if train.is_file() and evals.is_file():
                return train, evals
    wanted = " or ".join(f"{pattern.format('train')} + {pattern.format(split)}" for pattern in patterns)
    raise DatasetMissing(f"{root} has no {wanted} (looked in it and in {', '.join(subdirs)}/); expected {layout}")


def _word_stream(path: Path, vocab: dict[str, int], grow: bool) -> tuple[np.ndarray, int]:
    """Word ids of ``path``: every line's words (split on whitespace) then :data:`EOS`, empty lines included (as
    PyTorch's word_language_model example reads these files). ``grow``: new words get the next id (the training
    file); otherwise an unknown word is read as ``<unk>`` if the vocabulary has it, else ``ValueError``. Returns
    (ids, how many words were read as ``<unk>``)."""
    ids: list[int] = []
    unknown = 0
    unk = vocab.get(_UNK)
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            for word in line.split() + [EOS]:
                i = vocab.get(word)
                if i is None:
                    if grow:
                        i = vocab[word] = len(vocab)
                    elif unk is not None:
                        i, unknown = unk, unknown + 1
                    else:
                        raise ValueError(f"{path}:{no}: the word {word!r} is not in the training vocabulary, which "
                                         f"has no {_UNK} to read it as")
                ids.append(i)
    if not ids or len(ids) == ids.count(vocab.get(EOS)):
        raise ValueError(f"{path} holds no words")
    return np.asarray(ids, dtype=np.int32), unknown


def _word_sets(name: str, label: str, train_file: Path, eval_file: Path, split: str, subset: int | None,
               seed: int, max_len: int | None) -> SequenceSets:
    vocab: dict[str, int] = {}
    train_ids, _ = _word_stream(train_file, vocab, grow=True)
    eval_ids, unknown = _word_stream(eval_file, vocab, grow=False)
    classes = list(vocab)  # ids in order of first appearance in the training file
    train, evals = _windows(name, train_ids, eval_ids, max_len or LM_WINDOW, classes, subset, seed)
    note = (f"{label}, word level: {train_file.name} ({train_ids.size:,} tokens) for training, {eval_file.name} "
            f"({eval_ids.size:,} tokens, the {split} split) for evaluation, from {train_file.parent}; vocabulary of "
            f"{len(vocab):,} from the training file, '{EOS}' after every line"
            + (f"; {unknown:,} {split} words outside it read as {_UNK}" if unknown else ""))
    return train, evals, _lm_info(name, train, evals, len(vocab), classes, "word", note)


def build_ptb(data_dir: str | Path | None, subset: int | None = None, seed: int = 0, max_len: int | None = None,
              split: str = "valid") -> SequenceSets:
    """Word-level Penn Treebank from the files of Mikolov's release (``simple-examples/data/ptb.{train,valid,
    test}.txt``: one sentence per line, 10,000 words with ``<unk>``), found in ``data_dir``, ``data_dir/ptb``,
    ``data_dir/penn`` or ``data_dir/simple-examples/data``; ``train.txt`` / ``valid.txt`` / ``test.txt`` (the
    names in PyTorch's example) are read too.

    The vocabulary is the training file's words and ``<eos>``, numbered in order of first appearance; every line
    ends with ``<eos>``. Evaluation is on ``split``: ``"valid"`` by default, because the engine keeps the weights
    that score best on the evaluation split, so the test split must stay unseen until a final ``split="test"``."""
    max_len = check_max_len(max_len)
    layout = ("the Penn Treebank files of Mikolov's simple-examples.tgz (data/ptb.train.txt, ptb.valid.txt, "
              "ptb.test.txt) in data_dir or in its ptb/, penn/ or simple-examples/data/ folder")
    train_file, eval_file = _lm_files("ptb", data_dir, ("ptb", "penn", "simple-examples/data"),
                                      ("ptb.{}.txt", "{}.txt"), split, layout)
    return _word_sets("ptb", "Penn Treebank (Mikolov)", train_file, eval_file, split, subset, seed, max_len)


def build_wikitext2(data_dir: str | Path | None, subset: int | None = None, seed: int = 0,
                    max_len: int | None = None, split: str = "valid", raw: bool | None = None) -> SequenceSets:
    """WikiText-2 from the release files, found in ``data_dir``, ``data_dir/wikitext-2`` or
    ``data_dir/wikitext-2-raw``.

    * word level (``wikitext-2/wiki.{train,valid,test}.tokens``, or PyTorch's ``train.txt`` ...): as
      :func:`build_ptb` — vocabulary from the training file, ``<eos>`` after every line, blank lines included (the
      files' paragraph breaks), as PyTorch's word_language_model example reads them;
    * byte level (``wikitext-2-raw/wiki.{train,valid,test}.raw``): the files' UTF-8 bytes as tokens (vocabulary
      256, bits per byte), untokenised text as released.

    ``raw``: None reads the word-level files when present, else the raw ones; True / False insists on one. The
    evaluation ``split`` is ``"valid"`` by default (see :func:`build_ptb`)."""
    max_len = check_max_len(max_len)
    subdirs = ("wikitext-2", "wikitext-2-raw")
    words = ("the WikiText-2 release folder wikitext-2/ (wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens) "
             "in data_dir or data_dir itself")
    raws = "the folder wikitext-2-raw/ (wiki.train.raw, wiki.valid.raw, wiki.test.raw) in data_dir or data_dir itself"
    if not raw:
        try:
            files = _lm_files("wikitext2", data_dir, subdirs, ("wiki.{}.tokens", "{}.txt"), split,
                              words + ("" if raw is False else f", or {raws}"))
            return _word_sets("wikitext2", "WikiText-2", *files, split, subset, seed, max_len)
        except DatasetMissing:
            if raw is False or data_dir is None:
                raise
    train_file, eval_file = _lm_files("wikitext2_raw", data_dir, subdirs, ("wiki.{}.raw",), split,
                                      raws if raw else f"{words}, or {raws}")
    train_bytes, eval_bytes = train_file.read_bytes(), eval_file.read_bytes()
    train, evals = _windows("wikitext2_raw", np.frombuffer(train_bytes, np.uint8),
                            np.frombuffer(eval_bytes, np.uint8), max_len or LM_WINDOW, [], subset, seed)
    note = (f"WikiText-2 raw, byte level: {train_file.name} ({len(train_bytes):,} bytes) for training, "
            f"{eval_file.name} ({len(eval_bytes):,} bytes, the {split} split) for evaluation, from "
            f"{train_file.parent}; UTF-8 bytes as tokens (vocab 256)")
    return train, evals, _lm_info("wikitext2_raw", train, evals, 256, [], "byte", note)
