"""Text from a trained language model: `statelayers generate RUN_DIR --prompt TEXT`.

The run folder says everything needed (config.yaml: the model, its keyword arguments and the data's description,
with the vocabulary of a word-level corpus), so no data is read. The prompt is encoded as the run's data was
(UTF-8 bytes for a byte-level corpus; words split on whitespace for a word-level one, unknown words as ``<unk>``),
fed step by step through the model's streaming state (`S7Sequence.generate`), and the continuation decoded back:
bytes as UTF-8 (invalid sequences replaced), words joined by spaces with ``<eos>`` as a line break.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["generate_from_run"]


def _encode(prompt: str, info: dict) -> list[int]:
    unit = info.get("token_unit")
    if unit == "byte":
        return list(prompt.encode("utf-8"))
    vocab = {w: i for i, w in enumerate(info.get("classes") or [])}
    if not vocab:
        raise ValueError("the run's config.yaml holds no vocabulary to encode the prompt with")
    ids = []
    for word in prompt.replace("\n", " <eos> ").split():
        if word in vocab:
            ids.append(vocab[word])
        elif "<unk>" in vocab:
            ids.append(vocab["<unk>"])
        else:
            raise ValueError(f"the prompt's word {word!r} is not in the run's vocabulary (which has no <unk>)")
    return ids


def _decode(ids: list[int], info: dict) -> str:
    if info.get("token_unit") == "byte":
        return bytes(ids).decode("utf-8", errors="replace")
    words = [str(info["classes"][i]) for i in ids]
    return " ".join(words).replace(" <eos> ", "\n").replace("<eos>", "\n")


def generate_from_run(run_dir: str | Path, prompt: str, tokens: int = 200, *, temperature: float = 0.8,
                      seed: int = 0, weights: str = "best") -> str:
    """The prompt followed by ``tokens`` generated tokens, decoded, from a language-model run folder's ``best``
    weights (or the ``last`` checkpoint's). ValueError (one line) for a run that is not a language model, an empty
    prompt or a bad setting."""
    from ..checkpoint import latest_checkpoint, load_weights
    from ..data.sequence_base import SeqInfo
    from ..engine.config import TrainConfig
    from ..engine.rundir import read_config
    from ..engine.tasks import get_task

    run_dir = Path(run_dir)
    saved = read_config(run_dir)
    info = saved.get("data_info") or {}
    if not info.get("token_unit") or info.get("target") != "step_class":
        raise ValueError(f"{run_dir} is not a language-model run (its data {saved.get('data')!r} is not a corpus of "
                         "next-token targets: fortunes, ptb, wikitext2)")
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if weights not in ("best", "last"):
        raise ValueError(f"weights must be 'best' or 'last', got {weights!r}")
    ids = _encode(prompt, info)
    if not ids:
        raise ValueError("the prompt is empty: give at least one token of text (--prompt)")
    seq_info = SeqInfo(**{k: v for k, v in info.items() if k in SeqInfo.__dataclass_fields__})
    cfg = TrainConfig(model=saved["model"], data=saved["data"], task=saved.get("task"),
                      model_kwargs=saved.get("model_kwargs") or {}, data_dir=saved.get("data_dir"),
                      max_len=saved.get("max_len")).resolved()
    task = get_task(cfg.task)
    model = task.build_model(cfg, {"num_classes": seq_info.num_outputs(), **seq_info.model_kwargs()},
                             restoring=True)
    path = run_dir / "best.safetensors"
    if weights == "last":
        ckpt = latest_checkpoint(run_dir / "checkpoints")
        if ckpt is None:
            raise ValueError(f"{run_dir} has no checkpoint yet")
        path = ckpt / "model.safetensors"
    load_weights(model, path, expect_model=saved["model"])
    if not hasattr(model, "generate"):
        raise ValueError(f"model {saved['model']!r} has no streaming mode to generate with (the S7/S5/S6 models do)")
    model.eval()
    g = torch.Generator().manual_seed(int(seed))
    out = model.generate(torch.tensor([ids]), tokens, temperature=temperature, generator=g)
    return _decode(out[0].tolist(), info)
