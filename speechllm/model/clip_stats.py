"""Clip-level tokens from the tapped Whisper layers' time statistics (`ClipStatsTokens`), the core of
`ClipStatsAdapter` and of `QFormerAdapter(global_tokens=N)`."""

from __future__ import annotations

import torch
from torch import nn

from speechllm.errors import ConfigError


class ClipStatsTokens(nn.Module):
    """`tokens` LLM-width vectors from each tapped layer's time mean and std over the real frames.

    The statistics are standardised across clips (BatchNorm's running estimates, no affine), as a
    linear probe's scaler does: clips differ by a few percent of these statistics' size, which a
    per-clip LayerNorm cannot bring out. A batch of one cannot give batch statistics: it uses the
    running ones.

    `stats_warmup=N`: the first N training batches set the statistics (their plain average), which are
    then frozen, so training and inference standardise a clip the same way whatever its batch-mates.
    With 0 (the earlier behaviour) every training batch uses its own statistics and the running ones
    are an exponential average of the last batches. That broke down on the demo corpus once it held
    clips without speech: length-grouped batches put those clips together and their batches dragged
    the running statistics (acoustic gain over shuffled audio +5.6 points, against +9.4 with a 20-batch
    warm-up; docs/hearing.md). Under DDP each rank averages its own warm-up batches, as BatchNorm without
    SyncBatchNorm always did; rank 0's statistics are saved.

    `encoder_stats_dropout=p` (needs `n_extra` features): in training, each clip's standardised encoder
    statistics are zeroed (their mean) with probability p, so on those clips the MLP must answer from the
    extra features alone. Without it the MLP fits pitch through the thousands of encoder statistics, which
    separate the training voices but not new ones, and leaves the one feature that reads the label
    (docs/hearing.md: the relative F0). Modality dropout, at the level of whole feature groups.

    `feature_tokens=k` (needs `n_extra` features): k more tokens from a small MLP of their own over the
    standardised extra features alone, appended after the `tokens` ones. The Whisper statistics cannot steer
    them, so what the waveform features say (the relative F0 reads the pitch label by itself) reaches the LLM
    on unseen voices as it does on the corpus's (docs/hearing.md: the Whisper statistics steer the shared
    hidden layer on new voices). `encoder_stats_dropout` leaves this path's input untouched.

    `hide_encoder_stats` (class-wide, off): a diagnostic switch that hides the encoder statistics from every
    clip, in training and inference, so a benchmark can ask what the extra features alone carry
    (`benchmarks/feature_route.py`)."""

    hide_encoder_stats = False

    def __init__(self, enc_dim: int, n_layers: int, llm_dim: int, tokens: int, hidden: int = 512,
                 dropout: float = 0.0, zero_init: bool = False, stats_warmup: int = 0, n_extra: int = 0,
                 instruction_dim: int = 0, encoder_stats_dropout: float = 0.0, feature_tokens: int = 0,
                 feature_hidden: int = 64):
        super().__init__()
        self.tokens, self.dropout, self.stats_warmup, self.n_extra = tokens, dropout, stats_warmup, n_extra
        if not 0.0 <= encoder_stats_dropout < 1.0 or (encoder_stats_dropout and not n_extra):
            raise ConfigError(f"encoder_stats_dropout must be in [0, 1) and needs per-clip features beside the "
                              f"encoder statistics (ClipStatsAdapter prosody: true or relative); got "
                              f"{encoder_stats_dropout} with {n_extra} features")
        self.encoder_stats_dropout = encoder_stats_dropout
        n_in = 2 * n_layers * enc_dim + n_extra  # + per-clip features standardised alike (prosody)
        self.global_norm = nn.BatchNorm1d(n_in, affine=False)
        self.global_mlp = nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(),
                                        nn.Linear(hidden, tokens * llm_dim))
        if zero_init:  # start as one constant prompt: clip-dependence grows only where the loss asks for it
            nn.init.zeros_(self.global_mlp[2].weight)
        self.instruction_dim = instruction_dim
        if instruction_dim:  # built after the MLP, so a seed gives the MLP the same start with or without it
            self.instruction_norm = nn.LayerNorm(instruction_dim, elementwise_affine=False)
            self.instruction_proj = nn.Linear(instruction_dim, hidden, bias=False)
            nn.init.zeros_(self.instruction_proj.weight)  # starts as the question-blind adapter
        if feature_tokens < 0 or (feature_tokens and not n_extra):
            raise ConfigError(f"feature_tokens must be >= 0 and needs per-clip features beside the encoder statistics "
                              f"(ClipStatsAdapter prosody: true or relative); got {feature_tokens} with {n_extra} features")
        self.feature_tokens = feature_tokens
        if feature_tokens:  # built last, so a seed gives every other weight the same start with or without it
            self.feature_mlp = nn.Sequential(nn.Linear(n_extra, feature_hidden), nn.GELU(),
                                             nn.Linear(feature_hidden, feature_tokens * llm_dim))
            if zero_init:
                nn.init.zeros_(self.feature_mlp[2].weight)

    def forward(self, hidden_states: list[torch.Tensor], pad: torch.Tensor, extra: torch.Tensor | None = None,
                instruction: torch.Tensor | None = None, return_hidden: bool = False):
        """(B, tokens + feature_tokens, D_llm); with `return_hidden`, also the MLP's hidden layer (B, hidden)
        and the feature path's (B, feature_hidden), None without one."""
        # In float32 whatever the run's precision: clips differ by a few percent of these statistics,
        # about what bfloat16's 8-bit mantissa resolves, so a bf16 mean/std/standardisation would
        # round away much of what tells one voice from another.
        with torch.autocast(pad.device.type, enabled=False):
            keep = (~pad).unsqueeze(-1).float()  # (B, T, 1)
            n = keep.sum(1).clamp(min=1)
            stats = []
            for h in hidden_states:
                h = h.float()
                mean = (h * keep).sum(1) / n
                stats += [mean, (((h - mean[:, None]) ** 2 * keep).sum(1) / n).sqrt()]
            if self.n_extra:
                if extra is None or extra.shape != (len(pad), self.n_extra):
                    got = None if extra is None else tuple(extra.shape)
                    raise ValueError(f"this adapter takes {self.n_extra} per-clip features (`clip_features`) beside "
                                     f"the encoder states; got {got} for {len(pad)} clips: build batches with "
                                     f"model.processor, which adds them")
                stats.append(extra.to(pad.device).float())
            x = torch.cat(stats, -1)
            bn = self.global_norm
            batch_stats = self.training and len(x) > 1
            momentum = bn.momentum
            if self.stats_warmup:  # plain average over the warm-up batches, then frozen
                batch_stats = batch_stats and int(bn.num_batches_tracked) < self.stats_warmup
                if batch_stats:
                    bn.num_batches_tracked += 1
                    momentum = 1.0 / float(bn.num_batches_tracked)
            x = nn.functional.batch_norm(x, bn.running_mean, bn.running_var, training=batch_stats,
                                         momentum=momentum, eps=bn.eps)
            if self.n_extra and (self.hide_encoder_stats or self.training and self.encoder_stats_dropout):
                n_enc = x.shape[1] - self.n_extra  # after the standardisation: zero is the mean
                drop = (torch.ones(len(x), 1, dtype=torch.bool, device=x.device) if self.hide_encoder_stats
                        else torch.rand(len(x), 1, device=x.device) < self.encoder_stats_dropout)
                x = torch.cat([x[:, :n_enc].masked_fill(drop, 0.0), x[:, n_enc:]], -1)
            x = nn.functional.dropout(x, self.dropout, self.training)
            x = x.to(self.global_mlp[0].weight.dtype)
        pre = self.global_mlp[0](x)
        if self.instruction_dim:
            pre = pre + self._question(instruction, x, len(pad))
        h = self.global_mlp[1](pre)
        out = self.global_mlp[2](h).reshape(len(pad), self.tokens, -1)  # (B, tokens, D_llm)
        h_feat = None
        if self.feature_tokens:  # the extra features as standardised, never hidden by the encoder dropout
            h_feat = self.feature_mlp[1](self.feature_mlp[0](x[:, x.shape[1] - self.n_extra:]))
            out = torch.cat([out, self.feature_mlp[2](h_feat).reshape(len(pad), self.feature_tokens, -1)], 1)
        return (out, h, h_feat) if return_hidden else out

    def _question(self, instruction: torch.Tensor | None, x: torch.Tensor, n: int) -> torch.Tensor:
        """The question's shift of the hidden pre-activations: GELU can then switch units on or off per question."""
        if instruction is None or instruction.shape != (n, self.instruction_dim):
            got = None if instruction is None else tuple(instruction.shape)
            raise ValueError(f"this adapter takes each clip's question (`instruction`, {self.instruction_dim} wide) "
                             f"beside the encoder states; got {got} for {n} clips: build batches with "
                             f"model.processor and call SpeechLLM.encode_audio, which add it")
        return self.instruction_proj(self.instruction_norm(instruction.to(device=x.device, dtype=x.dtype)))
