"""ASR wrappers with one interface for test-time adaptation: Whisper (encoder-decoder) and CTC.

SUTA needs, per utterance: a transcript, and *differentiable* per-position class scores along the
model's own output. For CTC these are the frame logits (blank = "nothing said here"). For Whisper
they are the decoder's token distributions teacher-forced along its own greedy hypothesis; the
"non-blank" analogue masks the end-of-text position and special tokens. Both wrappers name the
parameters SUTA updates: every LayerNorm (weight, bias) plus the convolutional front end
(Whisper: encoder conv1/conv2; wav2vec2: feature extractor + feature projection, as the SUTA code's
`--train_feature` does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from speechllm.errors import ConfigError
from speechllm.model.encoder import encoder_output_from, encoder_states, load_whisper
from speechllm.model.shared_prefix import cache_kwarg, returned_cache

SAMPLE_RATE = 16_000


@dataclass
class Scores:
    """Differentiable scores along one utterance's hypothesis.

    logits: (N, V) raw logits (no temperature), N = frames (CTC) or hypothesis positions (Whisper)
    mask:   (N,) bool, True where the greedy class is a real token ("non-blank")
    labels: (N,) long, the greedy classes (pseudo-labels)
    """

    logits: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor


class TTAModel:
    """Common interface. `prepare` is label-free feature extraction (no grad)."""

    model: nn.Module
    name: str

    def prepare(self, wav: np.ndarray) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def transcribe(self, inputs: dict[str, torch.Tensor]) -> str:
        raise NotImplementedError

    def scores(self, inputs: dict[str, torch.Tensor]) -> Scores:
        raise NotImplementedError

    def pseudo_label_loss(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Supervised loss on the model's own greedy output (the SDPL baseline)."""
        raise NotImplementedError

    def feature_module_prefixes(self) -> tuple[str, ...]:
        raise NotImplementedError

    def param_groups(self) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
        """(LayerNorm params, feature-extractor params), disjoint, in a stable order."""
        feat_prefixes = self.feature_module_prefixes()
        ln, feat, seen = [], [], set()
        for mname, m in self.model.named_modules():
            in_feat = any(mname == p or mname.startswith(p + ".") for p in feat_prefixes)
            for pname, p in m.named_parameters(recurse=False):
                full = f"{mname}.{pname}" if mname else pname
                if full in seen:
                    continue
                if in_feat:
                    feat.append((full, p))
                    seen.add(full)
                elif isinstance(m, nn.LayerNorm) and pname in ("weight", "bias"):
                    ln.append((full, p))
                    seen.add(full)
        if not ln and not feat:
            raise ConfigError(f"{self.name}: found no LayerNorm or feature-extractor parameters to adapt")
        return ln, feat


# --------------------------------------------------------------------------------------- Whisper
class WhisperTTA(TTAModel):
    """HF `WhisperForConditionalGeneration` (loaded by `speechllm.model.encoder.load_whisper`, the one
    Whisper loader) with a hand-written greedy decoder.

    Why a second decoding loop next to the project's one transcriber (`speechllm.model.encoder.transcribe`,
    HF `generate`): SUTA differentiates the decoder's token distributions teacher-forced along the
    model's *own* greedy hypothesis (`scores`, `forced_scores`), re-decoded after every update, with
    the encoder run with grad (`encoder_states`, the project's one Whisper forward) on the clip's own
    length. `greedy` is that hypothesis: the same suppression rules as Whisper's no-timestamp decode,
    plus a repetition stop applied identically to source and adapted models, and sampling at a
    temperature for the Whisper-EM variants. It is the one allowed second decoding loop; transcripts
    outside test-time adaptation use `transcribe`.

    `real_length=True` runs the encoder on the clip's own length (+`pad_seconds` of the clip's own
    30-s-padded log-mel, unmasked; `prepare`) with sliced positional embeddings instead of the 30 s
    window: ~10x cheaper per SUTA step on short clips. This is not `WhisperEncoder`'s real-length
    forward (exact, masked, `FRONT_MARGIN` frames): the TTA tables were measured with this cut, which
    changes the source model slightly, so source and adapted runs must use the same setting (the CLI
    records it). `redecode=False` teacher-forces every step along the hypothesis of the *first* step
    (the source model's) instead of re-decoding greedily after each update: the autoregressive decode
    dominates a step's cost on CPU.
    """

    def __init__(self, model: nn.Module, processor: Any, name: str = "whisper", real_length: bool = True,
                 pad_seconds: float = 3.0, max_new_tokens: int = 96, language: str = "en",
                 redecode: bool = True, decode_beam: int = 1, device: str | torch.device = "cpu"):
        if decode_beam < 1:
            raise ConfigError(f"decode_beam {decode_beam}: the beam width of the final transcript is >= 1 (1 = greedy)")
        self.device = torch.device(device)
        self.model, self.processor, self.name = model.to(self.device).eval(), processor, name
        self.real_length, self.pad_seconds, self.max_new_tokens = real_length, pad_seconds, max_new_tokens
        self.redecode, self.decode_beam = redecode, decode_beam
        tok = processor.tokenizer
        gc = model.generation_config
        cfg = model.config
        self.eot = int(gc.eos_token_id if gc.eos_token_id is not None else cfg.eos_token_id)
        sot = int(cfg.decoder_start_token_id)
        prefix = [sot]
        if cfg.vocab_size >= 51865:  # multilingual vocab: language + task tokens
            prefix += [tok.convert_tokens_to_ids(f"<|{language}|>"), tok.convert_tokens_to_ids("<|transcribe|>")]
        prefix.append(tok.convert_tokens_to_ids("<|notimestamps|>"))
        self.prefix = torch.tensor(prefix, dtype=torch.long, device=self.device)
        V = cfg.vocab_size
        sup = torch.zeros(V, dtype=torch.bool)
        for t in list(getattr(gc, "suppress_tokens", None) or []):
            if 0 <= t < V:
                sup[t] = True
        # timestamps and other specials never belong in a no-timestamp transcript
        first_special = min(self.eot, *prefix)
        sup[first_special:] = True
        sup[self.eot] = False
        self.suppress = sup.to(self.device)
        self.begin_suppress = [t for t in (getattr(gc, "begin_suppress_tokens", None) or []) if 0 <= t < V]
        self.first_special = first_special

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kw: Any) -> WhisperTTA:
        """A pack name, hub id or folder, loaded by the one Whisper loader (float32)."""
        from transformers import WhisperProcessor

        w = load_whisper(name_or_path, torch.float32)
        if w.tokenizer is None:
            raise ValueError(f"{w.path}: this Whisper has no tokenizer (vocab.json/tokenizer.json); "
                             "test-time adaptation decodes text")
        processor = WhisperProcessor(feature_extractor=w.feature_extractor, tokenizer=w.tokenizer)
        return cls(w.model, processor, name=w.path.name, **kw)

    def feature_module_prefixes(self) -> tuple[str, ...]:
        return ("model.encoder.conv1", "model.encoder.conv2")

    def prepare(self, wav: np.ndarray) -> dict[str, torch.Tensor]:
        feats = self.processor.feature_extractor(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        x = feats.input_features  # (1, n_mels, 3000)
        if self.real_length:
            n = math.ceil((len(wav) / SAMPLE_RATE + self.pad_seconds) * 100)
            n = min(x.shape[-1], n + (n % 2))  # conv2 has stride 2
            x = x[..., :n]
        # a hypothesis far longer than speech can carry is a repetition loop: cap it (~6 tokens/s)
        limit = min(self.max_new_tokens, int(6 * len(wav) / SAMPLE_RATE) + 10)
        return {"input_features": x.to(self.device), "max_tokens": torch.tensor(limit)}

    def encode(self, input_features: torch.Tensor, memo: dict | None = None) -> torch.Tensor:
        """(1, n_mels, F) -> (1, F/2, D); any F ≤ 3000 (the project's one Whisper forward, with grad).
        With `memo` (the utterance's inputs), the bottom of the encoder that no trainable weight reaches
        runs once per utterance, without grad, and later calls start above it: the same numbers, without
        re-running blocks adaptation cannot change (SGEM on the top encoder layers: each of its steps)."""
        enc = self.model.model.encoder
        n = len(enc.layers)
        k = None if memo is None else self.frozen_encoder_blocks()
        if k is None:
            return encoder_states(enc, input_features, (n,))[0]
        k = min(k, n - 1)  # state after k < n blocks: encoder_states applies the final LayerNorm at n
        key = f"_encoder_state_after_block_{k}"
        if key not in memo:
            with torch.no_grad():
                memo[key] = encoder_states(enc, input_features, (k,))[0]
        return encoder_output_from(enc, memo[key], k)

    def frozen_encoder_blocks(self) -> int | None:
        """How many bottom encoder blocks have no trainable weight (the conv front end frozen too), or
        None when the front end trains. Read from requires_grad, so it follows whatever is adapted."""
        enc = self.model.model.encoder
        if any(p.requires_grad for p in (*enc.conv1.parameters(), *enc.conv2.parameters())):
            return None
        for i, layer in enumerate(enc.layers):
            if any(p.requires_grad for p in layer.parameters()):
                return i
        return len(enc.layers)

    def _decoder_logits(self, enc_out: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model(encoder_outputs=(enc_out,), decoder_input_ids=tokens.unsqueeze(0), use_cache=False)
        return out.logits[0]  # (L, V)

    @torch.no_grad()
    def greedy(self, enc_out: torch.Tensor, max_tokens: int | None = None, temperature: float = 0.0,
               generator: torch.Generator | None = None) -> list[int]:
        """Greedy token ids after the prefix (EOT excluded), with Whisper's suppression rules;
        `temperature` > 0 samples from softmax(logits / T) instead (seeded by `generator`)."""
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        enc_out = enc_out.detach()
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        ids = self.prefix.clone()
        step_in = ids
        out: list[int] = []
        self.last_stop = "limit"  # how this hypothesis ended: "eot" drawn, a "loop" cut, or the token "limit"
        for i in range(max_tokens or self.max_new_tokens):
            o = self.model(encoder_outputs=(enc_out,), decoder_input_ids=step_in.unsqueeze(0),
                           use_cache=True, **{cache_kwarg(self.model): cache})
            cache = returned_cache(o)
            logits = self.mask_step(o.logits[0, -1], first=i == 0)
            if temperature > 0:
                # drawn on the CPU with the CPU generator: the same samples whatever the model's device
                t = int(torch.multinomial((logits / temperature).softmax(-1).cpu(), 1, generator=generator))
            else:
                t = int(logits.argmax())
            if t == self.eot:
                self.last_stop = "eot"
                break
            out.append(t)
            cut = looping_tail(out)
            if cut:  # a looping hypothesis: keep one copy and stop, as a human reader would
                del out[-cut:]
                self.last_stop = "loop"
                break
            step_in = torch.tensor([t], device=self.device)
        return out

    def mask_step(self, logits: torch.Tensor, first: bool) -> torch.Tensor:
        """(..., V) next-token logits masked as Whisper's no-timestamp decode masks a step: suppressed tokens,
        and `begin_suppress` at the first step. Out of place (keeps grad); greedy, beam and `seq_em` share it."""
        x = logits.masked_fill(self.suppress, -math.inf)
        if first and self.begin_suppress:
            x[..., self.begin_suppress] = -math.inf
        return x

    def decoding_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, V) logits along a hypothesis (row i decides token i), masked as `greedy` masked each step before
        it picked or sampled the token."""
        return torch.cat([self.mask_step(logits[:1], first=True), self.mask_step(logits[1:], first=False)])

    def decode_text(self, tokens: list[int]) -> str:
        # clean-up off: ignored for Whisper's BPE anyway (same text), without transformers' warning
        return self.processor.tokenizer.decode(tokens, skip_special_tokens=True,
                                               clean_up_tokenization_spaces=False).strip()

    def transcribe(self, inputs: dict[str, torch.Tensor]) -> str:
        """The transcript every method reports: greedy, or a width-`decode_beam` beam search."""
        with torch.no_grad():
            enc = self.encode(inputs["input_features"], inputs)
            if self.decode_beam == 1:
                return self.decode_text(self.greedy(enc, token_limit(inputs)))
            from speechllm.tta.beam import beam_search  # beam.py builds on this module

            return self.decode_text(beam_search(self, enc, token_limit(inputs), self.decode_beam))

    def hypothesis(self, inputs: dict, search=None) -> tuple[torch.Tensor, list[int]]:
        """(encoder states with grad, the utterance's hypothesis). `search(enc, limit)` (greedy by default)
        decodes it on the first call and, with `redecode`, on every call; else `inputs["hyp"]` is reused."""
        enc_out = self.encode(inputs["input_features"], inputs)
        if self.redecode or "hyp" not in inputs:
            inputs["hyp"] = (search or self.greedy)(enc_out, token_limit(inputs))
        self.last_hypothesis = self.decode_text(inputs["hyp"])
        return enc_out, inputs["hyp"]

    def scores(self, inputs: dict[str, torch.Tensor]) -> Scores:
        return self.forced_scores(*self.hypothesis(inputs))

    def pseudo_label_loss(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        s = self.scores(inputs)
        return nn.functional.cross_entropy(s.logits, s.labels)

    def forced_scores(self, enc_out: torch.Tensor, hyp: list[int]) -> Scores:
        """Scores teacher-forced along a given token sequence (EOT appended), with grad."""
        labels = torch.tensor(hyp + [self.eot], dtype=torch.long, device=self.device)
        tokens = torch.cat([self.prefix, labels[:-1]])
        logits = self._decoder_logits(enc_out, tokens)[len(self.prefix) - 1:]
        return Scores(logits=logits, mask=labels < self.first_special, labels=labels)


def looping_tail(tokens: list[int], ngram: int = 4) -> int:
    """Tokens to drop if the hypothesis has started to loop: its last `ngram` tokens already occurred
    earlier (Whisper restarting the sentence: "… the house. The nurse move is …"), or it ends in a
    1–3 token block repeated (4 times for 1–2 tokens, "-y-y-y-y"; twice for 3). Whisper's own guard
    is a compression-ratio check with temperature fallback; this is the cheap greedy analogue,
    applied identically to source and adapted models."""
    n = len(tokens)
    if n > ngram:
        tail = tokens[n - ngram:]
        if any(tokens[i:i + ngram] == tail for i in range(n - ngram)):
            return ngram
    for size in (1, 2, 3):
        reps = 4 if size <= 2 else 2
        if n >= reps * size:
            block = tokens[n - size:]
            if all(tokens[n - (k + 1) * size: n - k * size] == block for k in range(1, reps)):
                return (reps - 1) * size
    return 0


def token_limit(inputs: dict[str, torch.Tensor]) -> int | None:
    """The utterance's cap on hypothesis tokens (`prepare`), or None for the model's own."""
    m = inputs.get("max_tokens")
    return int(m) if m is not None else None


# ------------------------------------------------------------------------------------------- CTC
class CTCTTA(TTAModel):
    """Any HF `Wav2Vec2ForCTC`-style model + its processor (blank = pad id, as in the SUTA code)."""

    def __init__(self, model: nn.Module, processor: Any = None, name: str = "ctc", blank_id: int | None = None,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model, self.processor, self.name = model.to(self.device).eval(), processor, name
        self.blank = int(blank_id if blank_id is not None else model.config.pad_token_id or 0)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kw: Any) -> CTCTTA:
        from transformers import AutoModelForCTC, AutoProcessor

        from speechllm.packs.hub import NO_HUB_KERNELS

        return cls(AutoModelForCTC.from_pretrained(str(path), **NO_HUB_KERNELS), AutoProcessor.from_pretrained(str(path)),
                   name=Path(str(path)).name, **kw)

    def feature_module_prefixes(self) -> tuple[str, ...]:
        base = self.model.base_model_prefix
        return (f"{base}.feature_extractor", f"{base}.feature_projection")

    def prepare(self, wav: np.ndarray) -> dict[str, torch.Tensor]:
        if self.processor is not None:
            fe = getattr(self.processor, "feature_extractor", self.processor)
            x = fe(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values
        else:  # zero-mean unit-variance, what Wav2Vec2FeatureExtractor does
            w = torch.as_tensor(wav, dtype=torch.float32)
            x = ((w - w.mean()) / (w.std() + 1e-7)).unsqueeze(0)
        return {"input_values": x.to(self.device)}  # (1, T)

    def _logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(inputs["input_values"]).logits[0]  # (frames, V)

    def ids_to_text(self, ids: list[int]) -> str:
        collapsed = [t for i, t in enumerate(ids) if t != self.blank and (i == 0 or t != ids[i - 1])]
        tok = getattr(self.processor, "tokenizer", None)
        if tok is None:
            return " ".join(map(str, collapsed))
        return tok.decode(collapsed).strip()

    def transcribe(self, inputs: dict[str, torch.Tensor]) -> str:
        with torch.no_grad():
            ids = self._logits(inputs).argmax(-1).tolist()
        return self.ids_to_text(ids)

    def scores(self, inputs: dict[str, torch.Tensor]) -> Scores:
        logits = self._logits(inputs)
        labels = logits.detach().argmax(-1)
        self.last_hypothesis = self.ids_to_text(labels.tolist())
        return Scores(logits=logits, mask=labels != self.blank, labels=labels)

    def pseudo_label_loss(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self._logits(inputs)
        ids = logits.detach().argmax(-1).tolist()
        target = [t for i, t in enumerate(ids) if t != self.blank and (i == 0 or t != ids[i - 1])]
        self.last_hypothesis = self.ids_to_text(ids)
        logp = logits.log_softmax(-1).unsqueeze(1)  # (frames, 1, V)
        return nn.functional.ctc_loss(logp, torch.tensor([target], dtype=torch.long, device=logp.device),
                                      torch.tensor([logp.shape[0]]), torch.tensor([len(target)]),
                                      blank=self.blank, zero_infinity=True)


def load_tta_asr(name: str, device: str | torch.device = "cpu", **kw: Any) -> TTAModel:
    """A pack name / HF id / local folder as a `TTAModel` to adapt on `device`: `WhisperTTA` or `CTCTTA`,
    by its config. (Not `speechllm.model.encoder.load_asr`, the frozen transcriber.)"""
    from transformers import AutoConfig

    from speechllm.packs.hub import resolve

    path = Path(resolve(name))
    cfg = AutoConfig.from_pretrained(str(path))
    if cfg.model_type == "whisper":
        return WhisperTTA.from_pretrained(path, device=device, **kw)
    if kw.get("decode_beam", 1) != 1:
        raise ConfigError(f"{name}: --decode-beam is for Whisper; a CTC model's transcript is its greedy path")
    return CTCTTA.from_pretrained(path, device=device)  # the other Whisper-only options in `kw` do not apply
