"""Trainable adapters: tapped Whisper layers -> a sequence of LLM input embeddings.

Every adapter has the same call: `adapter(hidden_states, lengths) -> (embeds, out_lengths)` with
hidden_states a list of (B, T, D_enc) tensors (one per tapped layer), lengths (B,) valid encoder
frames, embeds (B, N, D_llm) and out_lengths (B,) valid output tokens. Recipes pick one by
`class_path`; `enc_dim`, `n_layers` and `llm_dim` are filled in by `build_adapter` from the models.
An adapter with `wants_clip_features = True` is also called with `clip_features=` (A, P): per-clip
waveform statistics the processor computes (`ClipStatsAdapter(prosody=True)`). One with
`wants_instruction = True` is also called with `instruction=` (A, D_llm): the mean of the frozen LLM's
input embeddings over the question each clip is asked with (`ClipStatsAdapter(instruction_aware=True)`).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
from torch import nn

from speechllm.errors import ConfigError
from speechllm.model.attribute_heads import AttributeHeads, check_heads
from speechllm.model.clip_stats import ClipStatsTokens
from speechllm.model.prosody import N_PROSODY, N_PROSODY_RELATIVE
from speechllm.model.verbalizer import mix_words


def _padding_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """True where a frame is padding. (B,) -> (B, T)"""
    return torch.arange(t, device=lengths.device)[None, :] >= lengths[:, None]


class EmbeddingScaleNorm(nn.Module):
    """LayerNorm whose gain starts at the LLM's typical embedding scale, so adapter outputs enter the
    LLM at the size of its own token embeddings (measured: without it a Q-Former's outputs drift to
    15-22x the embedding norm and collapse to one oversized constant prompt)."""

    def __init__(self, dim: int, embed_rms: float | None):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        if embed_rms is not None:
            nn.init.constant_(self.norm.weight, float(embed_rms))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def _rename_pre_clip_stats_keys(state_dict, prefix, *_):
    """Checkpoints written before `ClipStatsTokens` existed kept its weights on the Q-Former itself."""
    for old in [k for k in state_dict if k.startswith(prefix + "global_")]:
        state_dict[prefix + "clip_stats." + old[len(prefix):]] = state_dict.pop(old)


class ClipStatsAdapter(nn.Module):
    """A clip-level soft prompt and nothing else: `tokens` vectors from the tapped layers' time mean
    and std (`ClipStatsTokens`), at the LLM's embedding scale. It carries who speaks and how (gender,
    pitch, rate, noise), not the words, which the interleaved transcript gives. On 398 training clips
    (benchmarks/soft_prompt_probe.py) this bottleneck generalises to held-out clips, where a
    Q-Former's per-clip queries fit the training clips and carry nothing to new ones.

    `prosody=True`: the waveform's F0 and level statistics (`speechllm.model.prosody`) join the Whisper
    statistics: F0, which Whisper's mel bands blur, and the level, measured directly. The
    processor then computes them for every clip (`clip_features` in the batch). `prosody="relative"`:
    two more, the median F0 in semitones from its gender's centre and the voiced span's length, which
    the gender-relative pitch labels and the per-second speaking rate are defined by.
    `encoder_stats_dropout=p`: in training, a clip's Whisper statistics are hidden with probability p, so
    the MLP learns to read the waveform features too (`ClipStatsTokens`).

    `instruction_aware=True`: the prompt also depends on the question (InstructBLIP's idea, at the
    size of this adapter): the mean of the LLM's input embeddings over the instruction shifts the MLP's
    hidden layer (zero-initialised, so training starts from the question-blind adapter). The audio
    comes before the question in the prompt, so a causal LLM cannot shape the soft prompt by the
    question itself; here the adapter can say only what was asked, instead of every attribute at once
    (docs/hearing.md: a "low" volume made the LLM answer "low" to pitch questions). It needs one
    question per clip: no `data.pack_clip_rows`. Every clip of a multi-clip row gets the row's whole
    question (which clip it names is not told apart).

    `attribute_heads={"pitch": ["low", "normal", "high"], ...}`: in training, a linear head per attribute on
    the MLP's hidden layer learns each clip's caption label (`speechllm.model.attribute_heads`), weighted by
    `attribute_loss_weight` beside the LLM's loss; dropped at inference.
    `feature_tokens=k` (needs prosody): k more tokens from the waveform features alone, through a small MLP
    of their own (`feature_hidden` wide; `ClipStatsTokens`); `attribute_heads_on="features"` puts the heads
    on that MLP's hidden layer instead of the main one.

    `words=[" male", " low", ...]`: each output token is a softmax mixture of the frozen LLM's embeddings
    of these one-token words (`speechllm.model.verbalizer`), not a free vector; no output norm (the
    mixture is at the embeddings' scale already). With `model.audio_anchors` one label a token, the prompt
    reads like a caption. `learn_words=True`: each token mixes its own trainable codes, which start as
    the words' embeddings (a soft codebook: the prompt stays inside the hull of vectors trained to be
    read), then the output norm as for free vectors."""

    def __init__(self, enc_dim: int, n_layers: int, llm_dim: int, tokens: int = 4, hidden: int = 512,
                 dropout: float = 0.0, embed_rms: float | None = None, zero_init: bool = False,
                 stats_warmup: int = 0, prosody: bool | str = False, instruction_aware: bool = False,
                 words: list[str] | None = None, learn_words: bool = False, encoder_stats_dropout: float = 0.0,
                 attribute_heads: dict[str, list[str]] | None = None, attribute_loss_weight: float = 0.5,
                 feature_tokens: int = 0, feature_hidden: int = 64, attribute_heads_on: str = "hidden"):
        super().__init__()
        if prosody not in (False, True, "relative"):
            raise ConfigError(f"ClipStatsAdapter prosody must be false, true or \"relative\", got {prosody!r}")
        self.wants_clip_features = bool(prosody)
        self.relative_prosody = prosody == "relative"  # the processor computes the longer feature set
        self.wants_instruction = instruction_aware
        self.fixed_tokens = tokens + feature_tokens  # every clip's prompt length (model.audio_anchors needs one)
        if isinstance(words, str):  # list("abc") would be three one-letter words
            raise ConfigError(f"ClipStatsAdapter words must be a list of distinct words, got {words!r}")
        self.words = list(words) if words is not None else None
        out_dim = len(self.words) if self.words is not None else llm_dim  # word logits or free vectors
        self.stats = ClipStatsTokens(enc_dim, n_layers, out_dim, tokens, hidden, dropout, zero_init, stats_warmup,
                                     n_extra=N_PROSODY_RELATIVE if self.relative_prosody
                                     else N_PROSODY if prosody else 0,
                                     instruction_dim=llm_dim if instruction_aware else 0,
                                     encoder_stats_dropout=encoder_stats_dropout, feature_tokens=feature_tokens,
                                     feature_hidden=feature_hidden)
        # fixed words are at the embeddings' scale already; free vectors and trained codes are not held there
        # (Adam moves a code's elements by ~lr a step, the words' own are ~0.1), so they are normalised
        self.out_norm = EmbeddingScaleNorm(llm_dim, embed_rms) if self.words is None or learn_words else None
        if self.words is not None:  # filled from the LLM by speechllm.model.verbalizer.bind_words
            if learn_words:  # each token's own codebook, trained from the words' embeddings (saved with the adapter)
                self.word_embeddings = nn.Parameter(torch.zeros(tokens, len(self.words), llm_dim))
            else:  # the LLM's own, frozen: rebuilt at every load, never saved
                self.register_buffer("word_embeddings", torch.zeros(len(self.words), llm_dim), persistent=False)
            self.words_bound = False
            if feature_tokens:  # word logits would need a width per path; nothing asks for it yet
                raise ConfigError("ClipStatsAdapter feature_tokens works with free vectors only, not with words")
        elif learn_words:
            raise ConfigError("ClipStatsAdapter learn_words needs words (the embeddings its codes start from)")
        # built last, so a seed gives every other weight the same start with or without them
        self.attribute_heads = check_heads(attribute_heads)
        self.wants_attribute_labels = self.attribute_heads is not None
        if attribute_heads_on not in ("hidden", "features") or (attribute_heads_on == "features" and not feature_tokens):
            raise ConfigError(f"ClipStatsAdapter attribute_heads_on must be \"hidden\" or \"features\" (the latter "
                              f"with feature_tokens > 0); got {attribute_heads_on!r} with {feature_tokens} feature tokens")
        self.attribute_heads_on = attribute_heads_on
        if self.attribute_heads is not None:
            if not attribute_loss_weight > 0:
                raise ConfigError(f"ClipStatsAdapter attribute_loss_weight must be > 0, got {attribute_loss_weight}")
            self.attribute_loss_weight = float(attribute_loss_weight)
            self.attribute_head = AttributeHeads(feature_hidden if attribute_heads_on == "features" else hidden,
                                                 self.attribute_heads)
        self._attribute_loss: torch.Tensor | None = None

    def pop_attribute_loss(self) -> torch.Tensor | None:
        """The heads' loss of the last training forward (unweighted), once; None without heads or labels."""
        loss, self._attribute_loss = self._attribute_loss, None
        return loss

    def word_distribution(self, hidden_states: list[torch.Tensor], lengths: torch.Tensor,
                          clip_features: torch.Tensor | None = None,
                          instruction: torch.Tensor | None = None) -> torch.Tensor:
        """(B, tokens, V): each token's weights over `words` (only for a word adapter)."""
        return torch.softmax(self._stats(hidden_states, lengths, clip_features, instruction).float(), dim=-1)

    def _stats(self, hidden_states, lengths, clip_features, instruction, return_hidden: bool = False):
        """The MLP's (B, tokens, D or V) output: free vectors, or word logits (and its hidden layer on request)."""
        return self.stats(hidden_states, _padding_mask(lengths, hidden_states[0].shape[1]), clip_features, instruction,
                          return_hidden=return_hidden)

    def forward(self, hidden_states: list[torch.Tensor], lengths: torch.Tensor,
                clip_features: torch.Tensor | None = None, instruction: torch.Tensor | None = None,
                attribute_labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._attribute_loss = None  # never a stale loss from an earlier batch
        if self.wants_attribute_labels and self.training and attribute_labels is not None:
            out, h, h_feat = self._stats(hidden_states, lengths, clip_features, instruction, return_hidden=True)
            self._attribute_loss = self.attribute_head.loss(h_feat if self.attribute_heads_on == "features" else h,
                                                            attribute_labels)
        else:
            out = self._stats(hidden_states, lengths, clip_features, instruction)
        if self.words is not None:
            if not self.words_bound:
                raise RuntimeError("a word adapter needs the LLM's word embeddings first "
                                   "(speechllm.model.verbalizer.bind_words; SpeechLLM does it when it builds the adapter)")
            out = mix_words(out, self.word_embeddings).to(out.dtype)
        if self.out_norm is not None:
            out = self.out_norm(out)
        return out, torch.full((len(out),), out.shape[1], device=out.device, dtype=torch.long)


class QFormerAdapter(nn.Module):
    """DeSTA2 connector: `n_queries` learned queries per tapped layer cross-attend (through a shared
    small transformer) to that layer; per-query softmax weights mix the layers; LayerNorm + Linear
    map to the LLM width. Output length is fixed: `n_queries`.

    Defaults follow DeSTA2's connector (a post-LN BERT encoder with cross-attention, unit-variance
    queries) plus two measured fixes for small data: each tapped Whisper layer is LayerNorm-ed before
    the cross-attention (`memory_norm`: the raw residual stream has a few huge, clip-independent
    dimensions that swamp the keys and values), and the output is normalised to the LLM's embedding
    scale (`match_embed_norm`). `norm_first=True, query_std=None, memory_norm=False,
    match_embed_norm=False` gives the earlier pre-LN variant."""

    def __init__(self, enc_dim: int, n_layers: int, llm_dim: int, n_queries: int = 64, depth: int = 2,
                 n_heads: int | None = None, ffn_mult: int = 4, dropout: float = 0.0, norm_first: bool = False,
                 query_std: float | None = 1.0, memory_norm: bool = True, match_embed_norm: bool = True,
                 global_tokens: int = 0, embed_rms: float | None = None, stats_warmup: int = 0):
        super().__init__()
        n_heads = n_heads or max(1, enc_dim // 64)
        std = query_std if query_std is not None else enc_dim**-0.5
        self.queries = nn.Parameter(torch.randn(n_layers, n_queries, enc_dim) * std)
        block = nn.TransformerDecoderLayer(enc_dim, n_heads, ffn_mult * enc_dim, dropout, batch_first=True,
                                           norm_first=norm_first, activation="gelu")
        self.qformer = nn.TransformerDecoder(block, depth)
        self.memory_norms = nn.ModuleList(nn.LayerNorm(enc_dim) for _ in range(n_layers)) if memory_norm else None
        self.layer_weights = nn.Parameter(torch.zeros(n_queries, n_layers))  # uniform mix at init
        self.proj = nn.Sequential(nn.LayerNorm(enc_dim), nn.Linear(enc_dim, llm_dim))
        self.out_norm = EmbeddingScaleNorm(llm_dim, embed_rms) if match_embed_norm else None
        # Optional clip-level tokens from each layer's time mean and std: a path on which every output
        # depends on the clip by construction (the queries' residual stream does not).
        self.global_tokens = global_tokens
        self.fixed_tokens = n_queries + global_tokens
        if global_tokens:
            self.clip_stats = ClipStatsTokens(enc_dim, n_layers, llm_dim, global_tokens, hidden=llm_dim,
                                              stats_warmup=stats_warmup)  # as ClipStatsAdapter's
        self._register_load_state_dict_pre_hook(_rename_pre_clip_stats_keys)

    def forward(self, hidden_states: list[torch.Tensor], lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = hidden_states[0].shape
        pad = _padding_mask(lengths, t)
        if self.memory_norms is not None:
            hidden_states = [norm(h) for norm, h in zip(self.memory_norms, hidden_states)]
        outs = []
        for i, h in enumerate(hidden_states):
            q = self.queries[i].unsqueeze(0).expand(b, -1, -1).to(h.dtype)
            outs.append(self.qformer(q, h, memory_key_padding_mask=pad))  # (B, Q, D_enc)
        stacked = torch.stack(outs, dim=2)  # (B, Q, L, D_enc)
        w = torch.softmax(self.layer_weights, dim=-1).unsqueeze(-1).to(stacked.dtype)  # (Q, L, 1)
        mixed = (stacked * w).sum(dim=2)  # (B, Q, D_enc)
        out = self.proj(mixed)
        if self.global_tokens:
            out = torch.cat([self.clip_stats(hidden_states, pad), out], dim=1)
        n = torch.full((b,), out.shape[1], device=out.device, dtype=torch.long)
        return (self.out_norm(out) if self.out_norm is not None else out), n  # (B, Q, D_llm)


class StackingMLPAdapter(nn.Module):
    """Ultravox-style projector: stack `stack` consecutive frames of the mean of the tapped layers,
    then RMSNorm + SwiGLU MLP. Output length follows the clip: ceil(T / stack)."""

    def __init__(self, enc_dim: int, n_layers: int, llm_dim: int, stack: int = 8, hidden: int | None = None):
        super().__init__()
        self.stack = stack
        d_in = enc_dim * stack
        hidden = hidden or 2 * llm_dim
        self.norm = nn.RMSNorm(d_in)
        self.up = nn.Linear(d_in, 2 * hidden)
        self.down = nn.Linear(hidden, llm_dim)

    def forward(self, hidden_states: list[torch.Tensor], lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.stack(hidden_states, 0).mean(0)  # (B, T, D)
        b, t, d = h.shape
        # padding frames zeroed here, not left to the encoder: with real_length off the live encoder keeps
        # Whisper's padding states while the encoder caches re-pad with zeros (training and inference differ)
        h = h.masked_fill(_padding_mask(lengths, t).unsqueeze(-1), 0.0)
        pad_t = (-t) % self.stack
        h = nn.functional.pad(h, (0, 0, 0, pad_t))
        h = h.reshape(b, (t + pad_t) // self.stack, d * self.stack)  # (B, T/k, k*D)
        a, g = self.up(self.norm(h)).chunk(2, dim=-1)
        out = self.down(a * nn.functional.silu(g))  # (B, T/k, D_llm)
        return out, (lengths + self.stack - 1) // self.stack


class WindowQFormerAdapter(nn.Module):
    """SALMONN-style window-level Q-Former: the clip is cut into windows of `window` frames and
    `n_queries` queries summarise each window; output length grows with the clip."""

    def __init__(self, enc_dim: int, n_layers: int, llm_dim: int, window: int = 17, n_queries: int = 1,
                 depth: int = 2, n_heads: int | None = None):
        super().__init__()
        n_heads = n_heads or max(1, enc_dim // 64)
        self.window, self.n_queries = window, n_queries
        self.queries = nn.Parameter(torch.randn(n_queries, enc_dim) * enc_dim**-0.5)
        self.layer_weights = nn.Parameter(torch.zeros(n_layers))
        block = nn.TransformerDecoderLayer(enc_dim, n_heads, 4 * enc_dim, 0.0, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.qformer = nn.TransformerDecoder(block, depth)
        self.proj = nn.Sequential(nn.LayerNorm(enc_dim), nn.Linear(enc_dim, llm_dim))

    def forward(self, hidden_states: list[torch.Tensor], lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.softmax(self.layer_weights, 0).to(hidden_states[0].dtype)
        h = sum(wi * hi for wi, hi in zip(w, hidden_states))  # (B, T, D)
        b, t, d = h.shape
        pad_t = (-t) % self.window
        h = nn.functional.pad(h, (0, 0, 0, pad_t))
        nw = (t + pad_t) // self.window
        frames = h.reshape(b * nw, self.window, d)
        valid = _padding_mask(lengths, t + pad_t).reshape(b * nw, self.window)
        valid[:, 0] = False  # an all-padding window would give NaN attention; it is dropped below anyway
        q = self.queries.unsqueeze(0).expand(b * nw, -1, -1).to(h.dtype)
        out = self.qformer(q, frames, memory_key_padding_mask=valid)  # (B*W, Q, D)
        out = self.proj(out.reshape(b, nw * self.n_queries, d))
        n = (lengths + self.window - 1) // self.window * self.n_queries
        return out, n


class LinearAdapter(nn.Module):
    """Baseline: mean of tapped layers, average-pooled by `pool`, one Linear to the LLM width."""

    def __init__(self, enc_dim: int, n_layers: int, llm_dim: int, pool: int = 4):
        super().__init__()
        self.pool = pool
        self.proj = nn.Linear(enc_dim, llm_dim)

    def forward(self, hidden_states: list[torch.Tensor], lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.stack(hidden_states, 0).mean(0)  # (B, T, D)
        b, t, d = h.shape
        keep = (~_padding_mask(lengths, t)).to(h.dtype).unsqueeze(-1)  # the last window: real frames only
        pad_t = (-t) % self.pool
        h = nn.functional.pad(h * keep, (0, 0, 0, pad_t)).reshape(b, -1, self.pool, d).sum(2)
        n = nn.functional.pad(keep, (0, 0, 0, pad_t)).reshape(b, -1, self.pool, 1).sum(2).clamp(min=1)
        return self.proj(h / n), (lengths + self.pool - 1) // self.pool


def build_adapter(spec: dict[str, Any], enc_dim: int, n_layers: int, llm_dim: int,
                  embed_rms: float | None = None) -> nn.Module:
    """`spec` = {"class_path": "speechllm.model.adapters.QFormerAdapter", "init_args": {...}}; a bare
    class name is looked up in this module. `embed_rms` (the LLM's per-element embedding RMS) reaches
    adapters that accept it, to start their outputs at the embeddings' scale."""
    path = spec.get("class_path", "QFormerAdapter")
    module_name, _, cls_name = path.rpartition(".")
    cls = getattr(importlib.import_module(module_name) if module_name else __import__(__name__, fromlist=["x"]),
                  cls_name)
    kwargs = dict(spec.get("init_args") or {})
    if embed_rms is not None and "embed_rms" in inspect.signature(cls).parameters:
        kwargs.setdefault("embed_rms", embed_rms)
    return cls(enc_dim=enc_dim, n_layers=n_layers, llm_dim=llm_dim, **kwargs)
