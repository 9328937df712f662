"""SpeechLLM = frozen Whisper encoder -> trainable adapter -> frozen causal LM (optional LoRA).

A plain nn.Module, usable without Lightning. `forward(batch)` returns the loss on target tokens;
`generate(...)` answers prompts about audio in left-padded batches.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from speechllm.model.adapters import build_adapter
from speechllm.model.anchors import anchor_ids, interleave_anchors
from speechllm.model.encoder import WhisperEncoder
from speechllm.model.processor import AUDIO_SLOT, IGNORE_INDEX, Example, SpeechLLMProcessor
from speechllm.model.prosody import prosody_batch
from speechllm.model.shared_prefix import shared_prefix_length, split_shared_prefix
from speechllm.model.verbalizer import bind_words
from speechllm.prompts.chat import DEFAULT_SYSTEM_PROMPT

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model, and every
    LoRA build printed that FutureWarning, which is about peft's code, not the user's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def head_logits(llm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head as the model's own forward applies it: some families scale or soft-cap the projection
    (Cohere `logit_scale`, Granite `logits_scaling`, Gemma 2 `final_logit_softcapping`)."""
    cfg = llm.config
    logits = llm.get_output_embeddings()(hidden)
    if getattr(cfg, "logit_scale", None):
        logits = logits * cfg.logit_scale
    if getattr(cfg, "logits_scaling", None):
        logits = logits / cfg.logits_scaling
    if getattr(cfg, "final_logit_softcapping", None):
        logits = torch.tanh(logits / cfg.final_logit_softcapping) * cfg.final_logit_softcapping
    return logits


@dataclass
class SpeechLLMConfig:
    """Everything needed to rebuild the model (saved as the checkpoint's config.yaml `model`)."""

    encoder: str = "whisper-tiny.en"
    llm: str = "smollm2-135m"
    encoder_layers: list[int] = field(default_factory=lambda: [-1])
    real_length: bool = True
    adapter: dict[str, Any] = field(default_factory=lambda: {
        "class_path": "speechllm.model.adapters.QFormerAdapter", "init_args": {"n_queries": 64}})
    lora: dict[str, Any] | None = None  # peft.LoraConfig kwargs, e.g. {"r": 8, "target_modules": ["q_proj", "v_proj"]}
    interleave_transcript: bool = True
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    dtype: str = "float32"  # of the frozen encoder and LLM
    audio_anchors: list[str] | None = None  # labels heading equal groups of the soft prompt (model/anchors.py); None: off
    instruction_first: bool = False  # the question before the audio, so the LLM reads the soft prompt knowing it


# Config fields that shape the prompt and add no weight, with their defaults: a resume must keep them, and the
# evaluation caches' keys carry them (the trained weights' digest cannot see them). A field at its default stays
# out of the key, so caches written before a field existed keep their keys.
PROMPT_SETTINGS: dict[str, Any] = {"interleave_transcript": True, "system_prompt": DEFAULT_SYSTEM_PROMPT,
                                   "audio_anchors": None, "instruction_first": False}


def join_windows(embeds: torch.Tensor, counts: torch.Tensor, windows_per_audio: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapter outputs of 30-s windows (W, N, D) + valid counts (W,) -> one sequence per clip
    (A, N', D) + counts (A,): each clip's windows' valid outputs concatenated in time order, as
    long-audio speech LLMs do."""
    seqs, w = [], 0
    for k in windows_per_audio.tolist():
        seqs.append(torch.cat([embeds[w + j, : int(counts[w + j])] for j in range(k)]))
        w += k
    lengths = torch.tensor([s.shape[0] for s in seqs], device=counts.device)
    return nn.utils.rnn.pad_sequence(seqs, batch_first=True), lengths


def answer_spans(keep: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Target mask (B, T) -> (answer index 0..n-1 of each kept position in `keep`'s row-major order, n).
    An answer is a maximal run of target positions within a row: one per single-turn row, one per
    branch of a packed sequence (its prompt tokens separate it from the next)."""
    prev = nn.functional.pad(keep[:, :-1], (1, 0), value=False)
    starts = (keep & ~prev).flatten().long()
    return (starts.cumsum(0) - 1)[keep.flatten()], int(starts.sum())


class SpeechLLM(nn.Module):
    share_prefix = True  # training forward: run the rows' common prompt opening once (off: the plain forward)

    def __init__(self, encoder: WhisperEncoder, llm: nn.Module, tokenizer, config: SpeechLLMConfig):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.llm = llm
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:  # e.g. Llama-3: pad with EOS; masks come from attention_mask
            tokenizer.pad_token = tokenizer.eos_token
        emb = llm.get_input_embeddings().weight
        embed_rms = float(emb.detach().float().pow(2).mean().sqrt())  # per element, over the vocabulary
        # New weights (adapter, LoRA) come from the CPU generator whatever the default device: Lightning
        # builds the model under the accelerator's device context, and the CUDA generator gave the same
        # seed another adapter (benchmarks/results/gpu_check.md: the GPU run ended 129 % away from the CPU's).
        with torch.device("cpu"):
            self.adapter = build_adapter(config.adapter, encoder.dim, len(encoder.layers), emb.shape[1], embed_rms)
        if getattr(self.adapter, "words", None) is not None:
            bind_words(self.adapter, tokenizer, llm.get_input_embeddings())
        clip_fn = None
        if getattr(self.adapter, "wants_clip_features", False):
            clip_fn = partial(prosody_batch, relative=getattr(self.adapter, "relative_prosody", False))
        self.processor = SpeechLLMProcessor(tokenizer, encoder.featurize, config.system_prompt,
                                            config.interleave_transcript, clip_feature_fn=clip_fn,
                                            instruction_ids=getattr(self.adapter, "wants_instruction", False),
                                            instruction_first=config.instruction_first,
                                            attribute_heads=getattr(self.adapter, "attribute_heads", None))
        self.anchor_ids = (anchor_ids(tokenizer, config.audio_anchors, self.adapter)
                           if config.audio_anchors is not None else None)
        self.encoder.requires_grad_(False)
        self.llm.requires_grad_(False)
        if config.lora:
            from peft import LoraConfig, get_peft_model

            with torch.device("cpu"), quiet_peft():  # peft moves the new weights to their base layer's device
                self.llm = get_peft_model(self.llm, LoraConfig(task_type="CAUSAL_LM", **config.lora))
        self.train(False)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_config(cls, config: SpeechLLMConfig) -> SpeechLLM:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from speechllm.packs.hub import NO_HUB_KERNELS, resolve

        dtype = DTYPES[config.dtype]
        encoder = WhisperEncoder.from_pretrained(config.encoder, config.encoder_layers, config.real_length, dtype)
        path = resolve(config.llm)
        llm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **NO_HUB_KERNELS)
        tok = AutoTokenizer.from_pretrained(path)
        return cls(encoder, llm, tok, config)

    def train(self, mode: bool = True) -> SpeechLLM:
        """Frozen parts stay in eval mode (no dropout) whatever Lightning asks; with LoRA only the LoRA
        sub-modules (lora_A/B/dropout) train, the base LLM's own dropout stays off."""
        super().train(mode)
        self.encoder.train(False)
        self.llm.train(False)
        if mode and self.config.lora:
            for name, m in self.llm.named_modules():
                if any(part.startswith("lora_") for part in name.split(".")):
                    m.train(True)
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.named_parameters() if v.requires_grad}

    # ------------------------------------------------------------------ forward pieces
    def encode_audio(self, batch: dict, encoder_states: tuple[list[torch.Tensor], torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio features -> adapter embeddings (A, N, D_llm) and valid counts (A,)."""
        if encoder_states is None:
            encoder_states = self.encoder(batch["input_features"], batch["feature_lengths"])
        hidden, lengths = encoder_states
        ad_dtype = next(self.adapter.parameters()).dtype
        # the adapter itself checks they are there and fit its clips
        extra = {"clip_features": batch.get("clip_features")} if getattr(self.adapter, "wants_clip_features", False) else {}
        if getattr(self.adapter, "wants_instruction", False):
            extra["instruction"] = self.instruction_embedding(batch)
        if getattr(self.adapter, "wants_attribute_labels", False) and self.training:
            extra["attribute_labels"] = batch.get("attribute_labels")
        embeds, counts = self.adapter([h.to(ad_dtype) for h in hidden], lengths.to(hidden[0].device), **extra)
        if self.anchor_ids:  # per 30-s window, before a long clip's windows are joined
            embeds, counts = interleave_anchors(embeds, counts, self.anchor_ids, self.llm.get_input_embeddings())
        if batch.get("windows_per_audio") is not None:
            embeds, counts = join_windows(embeds, counts, batch["windows_per_audio"])
        return embeds, counts

    def instruction_embedding(self, batch: dict) -> torch.Tensor | None:
        """Each clip's question as the mean of the frozen LLM's input embeddings over its tokens (A, D):
        a fixed function of the words (no forward pass), for adapters that read the question."""
        ids = batch.get("instruction_ids")
        if ids is None:
            return None
        emb_layer = self.llm.get_input_embeddings()
        ids = ids.to(emb_layer.weight.device)
        keep = (ids >= 0).unsqueeze(-1).float()
        with torch.no_grad():  # summed in float32 whatever the LLM's dtype
            total = (emb_layer(ids.clamp(min=0)).float() * keep).sum(1)
        return total / keep.sum(1).clamp(min=1)

    def embed(self, batch: dict, audio_embeds: torch.Tensor | None = None, audio_lengths: torch.Tensor | None = None,
              padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Splice audio embeddings into the text embeddings at each AUDIO_SLOT.
        -> inputs_embeds (B, T, D), attention_mask (B, T), position_ids (B, T), labels (B, T).
        Packed rows (`segments` in the batch): attention_mask is the (B, 1, T, T) branch mask instead."""
        ids, labels, lengths = batch["input_ids"], batch["labels"], batch["lengths"]
        segments = batch.get("segments")
        emb_layer = self.llm.get_input_embeddings()
        text_emb = emb_layer(ids.clamp(min=0).to(emb_layer.weight.device))  # (B, L, D)
        seqs, labs, segs = [], [], []
        a = 0
        for i in range(ids.shape[0]):
            row, n = ids[i, : lengths[i]], int(lengths[i])
            slots = (row == AUDIO_SLOT).nonzero().flatten().tolist()
            pieces, lab_pieces, seg_pieces, start = [], [], [], 0
            for s in slots:
                pieces.append(text_emb[i, start:s])
                lab_pieces.append(labels[i, start:s])
                k = int(audio_lengths[a])
                pieces.append(audio_embeds[a, :k].to(text_emb.dtype))
                lab_pieces.append(torch.full((k,), IGNORE_INDEX, dtype=labels.dtype, device=labels.device))
                if segments is not None:  # the audio takes its slot's segment (the shared prefix)
                    seg_pieces += [segments[i, start:s], segments[i, s:s + 1].expand(k)]
                start, a = s + 1, a + 1
            pieces.append(text_emb[i, start:n])
            lab_pieces.append(labels[i, start:n])
            seqs.append(torch.cat(pieces))
            labs.append(torch.cat(lab_pieces))
            if segments is not None:
                segs.append(torch.cat(seg_pieces + [segments[i, start:n]]))
        T = max(s.shape[0] for s in seqs)
        B, D = len(seqs), text_emb.shape[-1]
        out = text_emb.new_zeros(B, T, D)
        mask = torch.zeros(B, T, dtype=torch.long, device=text_emb.device)
        lab_out = torch.full((B, T), IGNORE_INDEX, dtype=torch.long, device=text_emb.device)
        for i, (s, lab) in enumerate(zip(seqs, labs)):
            sl = slice(T - s.shape[0], T) if padding_side == "left" else slice(0, s.shape[0])
            out[i, sl], mask[i, sl], lab_out[i, sl] = s, 1, lab.to(lab_out.device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        if segments is not None:
            from speechllm.model.packing import PAD, branch_attention

            if padding_side != "right":
                raise ValueError("packed rows are a training layout: right padding only")
            seg_out = torch.full((B, T), PAD, dtype=torch.long, device=text_emb.device)
            for i, sg in enumerate(segs):
                seg_out[i, : sg.shape[0]] = sg.to(seg_out.device)
            mask, position_ids = branch_attention(seg_out, out.dtype)
        return {"inputs_embeds": out, "attention_mask": mask, "position_ids": position_ids, "labels": lab_out}

    def forward(self, batch: dict, encoder_states=None, return_logits: bool = False,
                loss_reduction: str = "token") -> dict[str, torch.Tensor]:
        """Loss on target tokens only and their count; full logits on request.

        `loss_reduction`: "token" = mean over the batch's target tokens (a 50-token description weighs
        25 one-word answers); "answer" = mean within each answer (a contiguous run of target tokens),
        then over answers, so each answer weighs the same whatever its length. `n_loss_units` is the
        count the loss is a mean over (tokens or answers), for averaging across ranks.

        By default the LM head runs only where a target token is predicted: prompt and audio positions
        need hidden states (for attention) but no vocabulary projection, which for a 128k-token
        vocabulary is a large share of the step."""
        audio, alen = (self.encode_audio(batch, encoder_states) if "input_features" in batch or encoder_states
                       else (None, None))
        inp = self.embed(batch, audio, alen, padding_side="right")
        labels = inp.pop("labels")
        p = (shared_prefix_length(batch["input_ids"], batch["lengths"], labels)
             if self.share_prefix and not return_logits and "segments" not in batch else 0)
        if p:  # the chat template's common opening runs once, not once per row (speechllm.model.shared_prefix)
            inp, labels = split_shared_prefix(self.llm, inp, labels, p)
        shift_labels = labels[:, 1:]
        keep = shift_labels != IGNORE_INDEX  # (B, T-1)
        n_tok = keep.sum()
        if return_logits:
            logits = self.llm(**inp, use_cache=False).logits  # (B, T, V)
            pred = logits[:, :-1][keep]
        else:
            logits = None
            out = self.llm(**inp, use_cache=False, output_hidden_states=True, logits_to_keep=1)
            hidden = out.hidden_states[-1][:, :-1][keep]  # final-norm states at target positions (N, D)
            pred = head_logits(self.llm, hidden)
        ce = nn.functional.cross_entropy(pred.float(), shift_labels[keep], reduction="none")
        if loss_reduction == "token":
            loss, n_units = ce.sum() / n_tok.clamp(min=1), n_tok
        elif loss_reduction == "answer":
            span, n = answer_spans(keep)
            per_answer = ce.new_zeros(n).scatter_reduce(0, span, ce, reduce="mean", include_self=False)
            loss, n_units = per_answer.sum() / max(n, 1), n_tok.new_tensor(n)
        else:
            raise ValueError(f"loss_reduction must be 'token' or 'answer', got {loss_reduction!r}")
        res = {"loss": loss, "logits": logits, "n_target_tokens": n_tok, "n_loss_units": n_units, "audio_embeds": audio}
        aux = self.adapter.pop_attribute_loss() if hasattr(self.adapter, "pop_attribute_loss") else None
        if aux is not None:  # the adapter's attribute heads (training only): added to the loss optimised
            res["loss"], res["attribute_loss"] = loss + self.adapter.attribute_loss_weight * aux, aux.detach()
        return res

    # ------------------------------------------------------------------ generation
    def build_examples(self, audios: Sequence, prompts: Sequence[str], transcripts=None) -> list[Example]:
        """Inference examples as `generate` and likelihood scoring build them (Whisper transcripts
        filled in when the model interleaves them and none are given)."""
        exs = []
        for i, (a, p) in enumerate(zip(audios, prompts)):
            wavs = [] if a is None else ([a] if isinstance(a, np.ndarray) else list(a))
            tr = transcripts[i] if transcripts is not None else None
            tr = [tr] if isinstance(tr, str) else tr
            exs.append(Example(wavs=wavs, instruction=p, transcripts=tr, id=str(i)))
        if self.config.interleave_transcript:
            # Missing (None) transcripts come from the one transcriber, as `asr_transcript` did in training;
            # a given "" is a transcript (non-speech) and is kept, never re-decoded or skipped.
            need = [(e, j) for e in exs for j in range(len(e.wavs))
                    if not e.transcripts or j >= len(e.transcripts) or e.transcripts[j] is None]
            if need:
                texts = self.encoder.transcribe([e.wavs[j] for e, j in need])
                for (e, j), t in zip(need, texts):
                    ts = list(e.transcripts or [])
                    e.transcripts = ts + [None] * (len(e.wavs) - len(ts))
                    e.transcripts[j] = t
        return exs

    def render_prompt(self, prompt: str, n_audio: int = 1, transcripts: Sequence[str] | None = None) -> str:
        """The exact chat-templated text sent to the LLM (placeholders mark the audio embeddings)."""
        return self.processor.prompt_text(Example(wavs=[np.zeros(1)] * n_audio, instruction=prompt,
                                                  transcripts=list(transcripts) if transcripts else None))

    @torch.no_grad()
    def generate(self, audios: Sequence, prompts: Sequence[str], transcripts=None, max_new_tokens: int = 128,
                 batch_size: int = 8, **gen_kwargs) -> list[str]:
        """audios[i]: a 16 kHz waveform, a list of them, or None; prompts[i]: the instruction.
        Greedy by default; pass do_sample/temperature/top_p/repetition_penalty like HF generate."""
        exs = self.build_examples(audios, prompts, transcripts)
        out: list[str] = []
        for s in range(0, len(exs), batch_size):
            out.extend(self._generate_batch(exs[s : s + batch_size], max_new_tokens, **gen_kwargs))
        return out

    def _generate_batch(self, exs: list[Example], max_new_tokens: int, audio_counts: list[int] | None = None,
                        **gen_kwargs) -> list[str]:
        """`audio_counts`, if given, is extended with the LLM positions each clip became (example-major), after
        the anchors' labels and a long clip's joined windows: what a server bills as prompt tokens."""
        batch = self.processor(exs)
        dev = self.llm.get_input_embeddings().weight.device
        batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch.items()}
        audio, alen = self.encode_audio(batch) if "input_features" in batch else (None, None)
        if audio_counts is not None and alen is not None:
            audio_counts.extend(int(n) for n in alen.reshape(-1).tolist())
        inp = self.embed(batch, audio, alen, padding_side="left")
        inp.pop("labels")
        from speechllm.chat_lm import generate_batch, stop_ids

        gens = generate_batch(self.llm, self.tokenizer, inp["attention_mask"], max_new_tokens,
                              inputs_embeds=inp["inputs_embeds"], eos_token_id=stop_ids(self.llm, self.tokenizer),
                              **gen_kwargs)
        return [g.text for g in gens]

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, out_dir: str | Path, extra_config: dict | None = None,
                        adapter_state: dict | None = None) -> None:
        from speechllm.model.checkpoint import save_speechllm

        save_speechllm(self, out_dir, extra_config, adapter_state)

    @classmethod
    def from_pretrained(cls, ckpt_dir: str | Path, device: str | torch.device = "cpu") -> SpeechLLM:
        from speechllm.model.checkpoint import load_speechllm

        return load_speechllm(ckpt_dir, device)

    def config_dict(self) -> dict:
        return asdict(self.config)
