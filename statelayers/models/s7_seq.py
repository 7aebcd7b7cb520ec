"""S7 sequence models: encoder → stages of S7 blocks (token pooling, state expansion) → head.

    tokens (B, L) or x (B, L, C)  ──encoder──>  (B, L, H)
    stage i: depth × S7Block; the first block pools tokens by `stride` and widens H, P by `expansion`
    head: "pool" (mean over valid steps), "timepool" (τ-weighted mean), "last" (last valid step),
          "none" (per-step outputs) → Linear(num_classes)
    mixer="s6": the blocks are Mamba's (`layers/mamba.py`: x + S6(Norm(x))), one stage, no token pooling
    retrieval: both documents through the same encoder; [z₁, z₂, z₁−z₂, z₁⊙z₂] → Linear → GELU → Linear

Inputs are keyword tensors in the format of `statelayers.data.sequences` (`x` or `tokens`, optional `tau`,
`lengths`, `tokens2`, `lengths2`), so `model(**batch)` works on a padded batch (token padding `PAD_TOKEN` and the
lengths → valid-steps mask of `statelayers.layers.padding`). Registered with timm;
`s7_*` models have input-dependent layers, and every model takes `input_dependent=False` to become S5. `s6_*` are the
Mamba baseline: the same encoder, residual/norm structure, pooling and head around Mamba's block (`mixer="s6"`).

The `s7_<task>` variants are the official configurations (design note s7.md §7); for the three whose
trained artefacts exist the parameter counts match exactly (tests).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import register_model

from ..layers.mamba import S6Block
from ..layers.padding import PAD_TOKEN, check_lengths, mask_padding, valid_mask
from ..layers.s7 import S7Block

__all__ = ["S7Sequence", "GRUSequence"]


def _drop_timm_extras(kwargs: dict) -> None:
    """timm's create_model passes its pretrained-weight bookkeeping to every entrypoint; not used here."""
    for k in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(k, None)


class S7Sequence(nn.Module):
    """A stack of S7 (or S6, Mamba's) blocks with an encoder and a classification (or retrieval, or per-step) head.

    Args:
        num_classes: outputs of the head (0: return features).
        in_chans: channels of dense inputs `x` (B, L, C); or
        vocab_size: token vocabulary of `tokens` (B, L) (padding id `PAD_TOKEN` = -1 → a zero vector).
        d_model, d_state: H and P of the first stage.
        depth: S7 blocks per stage.  num_stages: stages.  expansion: H and P multiplier per stage.
        stride: token pooling in the first block of every stage (1: none).  pool: "last" | "avg" | "timepool".
        head: "pool" | "timepool" | "last" | "none".
        norm: "layer" | "batch".  drop_rate: dropout in every block (mask shared over time).
        retrieval: two-tower head for document pairs (`tokens`, `tokens2`).
        final_norm: LayerNorm on the last block's outputs (per step) before the head. The official
            configurations have none (their parameter counts); our generic sizes use it, because the S7 layer
            is cubic in its input and the un-normalised features start at RMS ≈ 5–40, which puts the
            initial cross-entropy far above log(classes).
        mixer: "s7" (the S7 layer in S5's block, `layers/s7.py`) or "s6" (Mamba's block, `layers/mamba.py`:
            x + Dropout(S6(Norm(x))), d_state = N per channel; needs stride=1 and expansion=1, Mamba has no token
            pooling or widening; τ is not read by the layer, only by the "timepool" head).
        default_tau: the time step of every token when no `tau` is given (the official code's
            `no_time_information`: τ = 1 for text, where an async layer has no times to read); None: `tau` is
            required where a layer needs it.
        **layer_kwargs: passed to every `S7` layer (block_size, conj_sym, complex_state, input_dependent,
            discretization, transition, bidirectional, dt_min, dt_max, scan_impl, ...), or every `S6` layer
            (expand, d_conv, dt_rank, dt_min, dt_max, dt_floor, conv_bias, bias, scan_impl).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 0, vocab_size: int = 0, d_model: int = 64,
                 d_state: int = 32, depth: int = 4, num_stages: int = 1, expansion: int = 1, stride: int = 1,
                 pool: str = "last", head: str = "pool", norm: str = "layer", drop_rate: float = 0.0,
                 retrieval: bool = False, final_norm: bool = False, mixer: str = "s7", default_tau: float | None = None,
                 **layer_kwargs):
        super().__init__()
        _drop_timm_extras(layer_kwargs)
        if mixer not in ("s7", "s6"):
            raise ValueError(f"mixer must be 's7' or 's6', got {mixer!r}")
        if mixer == "s6" and (stride != 1 or (num_stages > 1 and expansion != 1)):
            raise ValueError(f"mixer='s6' (Mamba's block) has no token pooling or widening between stages: it needs "
                             f"stride=1 and expansion=1, got stride={stride}, expansion={expansion}")
        if (in_chans > 0) == (vocab_size > 0):
            raise ValueError(f"give exactly one of in_chans (dense inputs) or vocab_size (tokens); got in_chans="
                             f"{in_chans}, vocab_size={vocab_size}")
        if head not in ("pool", "timepool", "last", "none"):
            raise ValueError(f"head must be pool, timepool, last or none, got {head!r}")
        if retrieval and head == "none":
            raise ValueError("the retrieval head needs a pooled feature (head='pool', 'timepool' or 'last')")
        self.num_classes, self.in_chans, self.vocab_size = num_classes, in_chans, vocab_size
        self.head_kind, self.retrieval, self.mixer = head, retrieval, mixer
        if default_tau is not None and not default_tau > 0:
            raise ValueError(f"default_tau must be a positive time step, got {default_tau!r}")
        self.default_tau = default_tau
        self.encoder = nn.Linear(in_chans, d_model) if in_chans else nn.Embedding(vocab_size, d_model)
        blocks = []
        h, p = d_model, d_state
        for i in range(num_stages):
            h_out, p_out = (h * expansion, p * expansion) if i > 0 else (h, p)
            for j in range(depth):
                first = j == 0
                if mixer == "s6":
                    blocks.append(S6Block(h_out, p_out, norm=norm, drop=drop_rate, n_layer=depth * num_stages,
                                          **layer_kwargs))
                    continue
                blocks.append(S7Block(h if first else h_out, p_out, d_out=h_out, norm=norm, drop=drop_rate,
                                      stride=stride if first else 1, pool=pool, **layer_kwargs))
            h, p = h_out, p_out
        self.blocks = nn.ModuleList(blocks)
        self.num_features = h
        self.norm = nn.LayerNorm(h) if final_norm else nn.Identity()
        if retrieval:
            self.head = nn.Sequential(nn.Linear(4 * h, h), nn.GELU(), nn.Linear(h, num_classes))
        else:
            self.head = nn.Linear(h, num_classes) if num_classes > 0 else nn.Identity()

    # ------------------------------------------------------------------------------------------- inputs

    def _encode(self, x: torch.Tensor | None, tokens: torch.Tensor | None) -> torch.Tensor:
        if self.in_chans:
            if x is None:
                raise ValueError(f"this model takes dense inputs x of shape (batch, length, {self.in_chans})")
            if x.dim() != 3 or x.shape[-1] != self.in_chans:
                raise ValueError(f"x must have shape (batch, length, {self.in_chans}), got {tuple(x.shape)}")
            if not x.is_floating_point():
                raise ValueError(f"x must be a float tensor, got {x.dtype}")
            return self.encoder(x)
        if tokens is None:
            raise ValueError(f"this model takes token ids `tokens` of shape (batch, length), vocab {self.vocab_size}")
        if tokens.dim() != 2 or tokens.is_floating_point():
            raise ValueError(f"tokens must be an integer tensor (batch, length), got {tokens.dtype} "
                             f"{tuple(tokens.shape)}")
        if tokens.numel() and (tokens.max() >= self.vocab_size or tokens.min() < PAD_TOKEN):
            raise ValueError(f"token ids must be in [0, {self.vocab_size}) (or {PAD_TOKEN} for padding); got "
                             f"[{tokens.min().item()}, {tokens.max().item()}]")
        pad = tokens == PAD_TOKEN
        emb = self.encoder(tokens.clamp(min=0))
        return emb.masked_fill(pad[..., None], 0.0)

    # ------------------------------------------------------------------------------------------- forward

    def forward_features(self, x: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
                         tau: torch.Tensor | None = None, lengths: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(per-step features (B, L', H), pooled τ (B, L') or None, lengths (B,) or None)."""
        z = self._encode(x, tokens)
        if tau is None and self.default_tau is not None:
            tau = z.new_full(z.shape[:2], self.default_tau)
        if tau is not None and tau.shape != z.shape[:2]:
            raise ValueError(f"tau must have shape {tuple(z.shape[:2])}, got {tuple(tau.shape)}")
        # lengths are checked once here (the blocks take them unchecked: one host sync per forward, none compiled);
        # the padded steps of the inputs become 0 where they enter, so NaN or inf there cannot leak into valid steps
        check_lengths(lengths, z.shape[0], z.shape[1])
        if lengths is not None:
            valid = valid_mask(lengths, z.shape[1], z.device)
            z, tau = mask_padding(z, valid), mask_padding(tau, valid)
        for blk in self.blocks:
            s = blk.ssm.stride
            z = blk(z, tau, lengths, check=False)
            if s > 1:
                if tau is not None:
                    tau = F.pad(tau, (0, (-tau.shape[1]) % s)).view(tau.shape[0], -1, s).sum(dim=2)
                if lengths is not None:
                    lengths = torch.div(lengths + s - 1, s, rounding_mode="floor")
        return self.norm(z), tau, lengths

    def pool_features(self, z: torch.Tensor, tau: torch.Tensor | None = None, lengths: torch.Tensor | None = None
                      ) -> torch.Tensor:
        valid = valid_mask(lengths, z.shape[1], z.device)
        if self.head_kind == "last":
            if lengths is None:
                return z[:, -1]
            return z[torch.arange(z.shape[0], device=z.device), (lengths - 1).clamp(min=0)]
        w = torch.ones(z.shape[:2], device=z.device, dtype=z.dtype)
        if self.head_kind == "timepool" and tau is not None:
            w = tau.to(z.dtype)
        if valid is not None:
            w = w * valid.to(z.dtype)
            z = mask_padding(z, valid)  # not z·w alone: NaN·0 is NaN
        return (z * w[..., None]).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp_min(1e-12)

    def forward_head(self, z: torch.Tensor, tau: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
                     pre_logits: bool = False) -> torch.Tensor:
        if self.head_kind == "none":
            return z if pre_logits else self.head(z)
        f = self.pool_features(z, tau, lengths)
        return f if pre_logits else self.head(f)

    def forward(self, x: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
                tau: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
                tokens2: torch.Tensor | None = None, lengths2: torch.Tensor | None = None) -> torch.Tensor:
        if self.vocab_size and isinstance(x, torch.Tensor) and not x.is_floating_point() and tokens is None:
            x, tokens = None, x  # model(token_tensor)
        if self.retrieval:
            if tokens2 is None:
                raise ValueError("the retrieval model needs both documents: tokens and tokens2")
            f1 = self.forward_head(*self.forward_features(x, tokens, tau, lengths), pre_logits=True)
            f2 = self.forward_head(*self.forward_features(None, tokens2, None, lengths2), pre_logits=True)
            return self.head(torch.cat([f1, f2, f1 - f2, f1 * f2], dim=-1))
        return self.forward_head(*self.forward_features(x, tokens, tau, lengths))

    # ------------------------------------------------------------------------------------------- streaming

    def init_state(self, batch: int, device: torch.device | str | None = None) -> dict:
        """Streaming state: every block's SSM state and the head's running pool."""
        return {"blocks": [b.init_state(batch, device) for b in self.blocks], "sum": None, "weight": None,
                "last": None}

    @torch.no_grad()
    def step(self, token: torch.Tensor, state: dict, tau_k: torch.Tensor | None = None
             ) -> tuple[torch.Tensor | None, dict]:
        """Feed one step (a token id (B,) or a dense input (B, C)) → (logits so far or None, state).

        After the last step of a sequence the logits equal `forward` on the whole sequence (exactly the
        same computation, one step at a time); for head="none" the per-step output is returned instead.
        """
        if self.retrieval:
            raise ValueError("the retrieval model compares two whole documents; it has no streaming mode")
        if self.vocab_size:
            z = self._encode(None, token[:, None])[:, 0]
        else:
            z = self._encode(token[:, None, :], None)[:, 0]
        tau = tau_k
        if tau is None and self.default_tau is not None:
            tau = z.new_full(z.shape[:1], self.default_tau)
        new_blocks = []
        for blk, st in zip(self.blocks, state["blocks"]):
            s = blk.ssm.stride
            if z is None:
                new_blocks.append(st)
                continue
            z_next, new_st = blk.step(z, st, tau)
            if s > 1 and tau is not None:  # τ of a pooled step: the sum over its window
                acc = st.get("tau_acc", 0) + tau
                new_st["tau_acc"] = 0 if z_next is not None else acc
                tau = acc
            new_blocks.append(new_st)
            z = z_next
        new = dict(state, blocks=new_blocks)
        if z is None:
            return None, new
        z = self.norm(z)
        if self.head_kind == "none":
            return self.head(z), new
        w = torch.ones_like(z[:, :1]) if (self.head_kind != "timepool" or tau is None) else tau[:, None].to(z.dtype)
        new["sum"] = w * z if state["sum"] is None else state["sum"] + w * z
        new["weight"] = w if state["weight"] is None else state["weight"] + w
        new["last"] = z
        f = z if self.head_kind == "last" else new["sum"] / new["weight"].clamp_min(1e-12)
        return self.head(f), new

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, steps: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue token sequences: ``prompt`` (B, L₀) token ids → (B, L₀ + steps), one token at a time through
        `step` (the prompt is read step by step too, so the cost per new token does not grow with the length).
        temperature 0: the most likely token; else sampled from softmax(logits / temperature) with ``generator``.
        Needs a language model: token inputs, an output per step (head "none") over the same vocabulary."""
        if not (self.vocab_size and self.head_kind == "none" and self.num_classes == self.vocab_size):
            raise ValueError("generate needs a language model: token inputs (vocab_size), head='none' and "
                             f"num_classes = vocab_size; this one has vocab_size={self.vocab_size}, "
                             f"head={self.head_kind!r}, num_classes={self.num_classes}")
        if prompt.dim() != 2 or prompt.shape[1] < 1 or prompt.is_floating_point():
            raise ValueError(f"prompt must be token ids of shape (batch, length >= 1), got {prompt.dtype} "
                             f"{tuple(prompt.shape)}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        state = self.init_state(prompt.shape[0], prompt.device)
        out = [prompt]
        for k in range(prompt.shape[1]):
            logits, state = self.step(prompt[:, k], state)
        for _ in range(steps):
            if temperature == 0:
                token = logits.argmax(dim=-1)
            else:
                probs = torch.softmax(logits.float() / temperature, dim=-1)
                token = torch.multinomial(probs, 1, generator=generator)[:, 0]
            out.append(token[:, None])
            logits, state = self.step(token, state)
        return torch.cat(out, dim=1)

    # -- timm's classifier API -------------------------------------------------------------------------

    def get_classifier(self) -> nn.Module:
        """The last layer of the head (of the pair MLP for a retrieval model)."""
        return self.head[-1] if self.retrieval else self.head

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised last layer with `num_classes` outputs; 0 makes the model return its pooled
        features (`num_features` wide), or the pair MLP's hidden layer for a retrieval model, as timm's models do."""
        self.num_classes = num_classes
        width = self.get_classifier().in_features if self.retrieval else self.num_features
        layer = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()
        if self.retrieval:
            self.head[-1] = layer
        else:
            self.head = layer

    def no_weight_decay(self) -> set[str]:
        names = set()
        for i, blk in enumerate(self.blocks):
            names |= {f"blocks.{i}.ssm.{n}" for n in blk.ssm.no_weight_decay()}
        return names

    def ssm_parameters(self) -> list[nn.Parameter]:
        """The S7 recipe's "ssm" group: eigenvalues (and static B for S5), at their own learning rate; empty for
        S6 (Mamba trains A with the other parameters)."""
        return [p for blk in self.blocks for p in blk.ssm.ssm_parameters()]


class GRUSequence(nn.Module):
    """A GRU baseline with the same encoders, inputs and heads as `S7Sequence` (for the S7 study); causal, so with
    head "none" its output at step t depends on steps ≤ t only."""

    def __init__(self, num_classes: int = 10, in_chans: int = 0, vocab_size: int = 0, d_model: int = 64,
                 depth: int = 2, head: str = "pool", drop_rate: float = 0.0, **kwargs):
        super().__init__()
        _drop_timm_extras(kwargs)
        if kwargs:
            raise TypeError(f"unexpected arguments for the GRU baseline: {sorted(kwargs)}")
        if head not in ("pool", "last", "none"):
            raise ValueError(f"head must be 'pool', 'last' or 'none' (an output per step), got {head!r}")
        if (in_chans > 0) == (vocab_size > 0):
            raise ValueError(f"give exactly one of in_chans (dense inputs) or vocab_size (tokens); got in_chans="
                             f"{in_chans}, vocab_size={vocab_size}")
        self.num_classes, self.in_chans, self.vocab_size, self.head_kind = num_classes, in_chans, vocab_size, head
        self.encoder = nn.Linear(in_chans, d_model) if in_chans else nn.Embedding(vocab_size, d_model)
        self.gru = nn.GRU(d_model, d_model, num_layers=depth, batch_first=True, dropout=drop_rate if depth > 1 else 0)
        self.num_features = d_model
        self.head = nn.Linear(d_model, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """A new last layer with `num_classes` outputs; 0 returns the pooled GRU features, as timm's models do."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
                tau: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
                tokens2: torch.Tensor | None = None, lengths2: torch.Tensor | None = None) -> torch.Tensor:
        """The inputs of `S7Sequence.forward`; `tau` is accepted and not used (the GRU has no time steps), a
        retrieval pair (`tokens2`) is refused: the baseline has no two-tower head."""
        if tokens2 is not None or lengths2 is not None:
            raise ValueError("the GRU baseline takes one sequence per example; retrieval pairs (tokens2) need an "
                             "S7 model built with retrieval=True")
        z = S7Sequence._encode(self, x, tokens)
        check_lengths(lengths, z.shape[0], z.shape[1])
        valid = valid_mask(lengths, z.shape[1], z.device)
        z = mask_padding(z, valid)  # padded steps hold 0, never NaN
        out, _ = self.gru(z)
        if self.head_kind == "none":
            return self.head(out)
        if self.head_kind == "last":
            f = out[:, -1] if lengths is None else out[torch.arange(out.shape[0]), (lengths - 1).clamp(min=0)]
        else:
            w = torch.ones(out.shape[:2], device=out.device) if valid is None else valid.to(out.dtype)
            f = (out * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-12)
        return self.head(f)


# ----------------------------------------------------------------------------------------------- variants


def _create(pretrained: bool, defaults: dict, kwargs: dict) -> S7Sequence:
    if pretrained:
        raise ValueError("statelayers ships no pretrained S7/S5/S6 weights (nothing is downloaded); use "
                         "pretrained=False")
    return S7Sequence(**{**defaults, **kwargs})


# generic sizes for the offline tasks (ours)
@register_model
def s7_tiny(pretrained=False, **kwargs):
    """H=32, P=16, 2 blocks: seconds-long runs."""
    return _create(pretrained, dict(d_model=32, d_state=16, depth=2, final_norm=True), kwargs)


@register_model
def s7_small(pretrained=False, **kwargs):
    """H=64, P=32, 4 blocks."""
    return _create(pretrained, dict(d_model=64, d_state=32, depth=4, final_norm=True), kwargs)


@register_model
def s7_base(pretrained=False, **kwargs):
    """H=128, P=64, 6 blocks."""
    return _create(pretrained, dict(d_model=128, d_state=64, depth=6, final_norm=True), kwargs)


@register_model
def s5_small(pretrained=False, **kwargs):
    """`s7_small` with input-independent Δ, B, C: the S5 baseline."""
    return _create(pretrained, dict(d_model=64, d_state=32, depth=4, input_dependent=False, final_norm=True), kwargs)


@register_model
def s6_tiny(pretrained=False, **kwargs):
    """Mamba's block (S6), H=32, N=16 per channel, expand 2, 2 blocks: seconds-long runs."""
    return _create(pretrained, dict(mixer="s6", d_model=32, d_state=16, depth=2, final_norm=True), kwargs)


@register_model
def s6_small(pretrained=False, **kwargs):
    """Mamba's block (S6) in `s7_small`'s frame: H=64, N=16 per channel (Mamba's default), expand 2 (E=128), conv
    kernel 4, Δ rank 4, 4 blocks: the Mamba baseline.

    Parameters in the blocks and the final norm: 131,200 (s5_small 34,112; s7_small 1,083,984; gru_small's GRU
    49,920); the encoder and head add 64·(C+1) + 65·K for C input channels and K classes, the same for all four
    (132,106 in all for C=3, K=10)."""
    return _create(pretrained, dict(mixer="s6", d_model=64, d_state=16, depth=4, final_norm=True), kwargs)


@register_model
def gru_small(pretrained=False, **kwargs):
    """A 2-layer GRU (H=64) with the same encoders and heads (baseline)."""
    if pretrained:
        raise ValueError("no pretrained weights")
    return GRUSequence(**{"d_model": 64, "depth": 2, **kwargs})


# The official configurations (design note s7.md §7). Where the official config turns its "stable" flag on we
# use the stable map; where it is off we use "clip" (Re Λ learned directly, clipped below zero), which keeps
# |Λ̄| ≤ 1 as well — the official code leaves Re Λ unclipped in some of those, we never do.
_OFFICIAL = {
    "dvs_gesture": dict(d_model=16, d_state=16, block_size=16, num_stages=2, depth=3, drop_rate=0.25, norm="layer",
                        discretization="async", conj_sym=False, transition="clip", stride=16, pool="timepool",
                        expansion=2, head="timepool", vocab_size=32768),
    "shd": dict(d_model=64, d_state=8, block_size=8, depth=6, drop_rate=0.1, norm="layer", discretization="async",
                conj_sym=True, transition="stable", stride=8, pool="avg", dt_min=4e-3, head="pool", vocab_size=700),
    "listops": dict(d_model=102, d_state=8, block_size=8, depth=6, drop_rate=0.235, norm="batch",
                    discretization="zoh", conj_sym=True, transition="stable", head="pool", vocab_size=18),
    "lra_text": dict(d_model=70, d_state=8, block_size=2, depth=3, drop_rate=0.134, norm="batch",
                     discretization="zoh", conj_sym=False, transition="clip", dt_min=1.1e-5, head="pool",
                     vocab_size=135),
    "lra_retrieval": dict(d_model=80, d_state=10, block_size=5, depth=3, drop_rate=0.105, norm="batch",
                          discretization="zoh", conj_sym=False, transition="clip", head="pool", vocab_size=98,
                          retrieval=True),
    "lra_image": dict(d_model=30, d_state=48, block_size=4, depth=4, drop_rate=0.115, norm="batch",
                      discretization="zoh", conj_sym=False, transition="clip", dt_min=7e-9, head="pool",
                      vocab_size=256),
    "lra_pathfinder": dict(d_model=50, d_state=2, block_size=2, depth=6, drop_rate=0.006, norm="batch",
                           discretization="zoh", conj_sym=True, transition="clip", dt_min=5e-5, head="pool",
                           vocab_size=256, num_classes=2),
    "eigenworms": dict(d_model=36, d_state=8, block_size=4, depth=1, drop_rate=0.195, norm="batch",
                       discretization="zoh", conj_sym=False, transition="clip", head="pool", in_chans=6,
                       num_classes=5),
    # the per-step tasks. The official configurations are bidirectional; on next-step targets (Walker2d, PTB,
    # WikiText-2) that reads the answer, so the engine refuses them there until given bidirectional=False.
    "personactivity": dict(d_model=120, d_state=64, block_size=2, depth=1, drop_rate=0.038, norm="batch",
                           discretization="zoh", conj_sym=True, transition="clip", bidirectional=True, head="none",
                           in_chans=7, num_classes=7),
    "walker": dict(d_model=100, d_state=32, block_size=2, depth=1, drop_rate=0.214, norm="batch",
                   discretization="async", conj_sym=False, transition="stable", bidirectional=True, head="none",
                   in_chans=17, num_classes=17),
    "ptb": dict(d_model=14, d_state=6, block_size=1, depth=10, drop_rate=0.49, norm="batch", discretization="async",
                conj_sym=False, transition="stable", bidirectional=True, head="none", vocab_size=10000,
                num_classes=10000, default_tau=1.0),
    "wikitext2": dict(d_model=44, d_state=48, block_size=4, depth=1, drop_rate=0.62, norm="batch",
                      discretization="async", conj_sym=False, transition="clip", bidirectional=True, head="none",
                      vocab_size=33278, num_classes=33278, default_tau=1.0),
}


def _official(name: str):
    defaults = _OFFICIAL[name]

    def entry(pretrained=False, **kwargs):
        kw = dict(kwargs)
        # a dense/token input from the data replaces the configuration's
        if "in_chans" in kw and kw["in_chans"] and "vocab_size" in defaults:
            kw.setdefault("vocab_size", 0)
        if "vocab_size" in kw and kw["vocab_size"] and "in_chans" in defaults:
            kw.setdefault("in_chans", 0)
        return _create(pretrained, defaults, kw)

    entry.__name__ = f"s7_{name}"
    entry.__doc__ = f"The official S7 configuration for {name} (design note s7.md §7)."
    return register_model(entry)


for _name in _OFFICIAL:
    globals()[f"s7_{_name}"] = _official(_name)
