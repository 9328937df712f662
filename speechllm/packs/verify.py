"""Check a converted pack against its source: `speechllm models check NAME`.

Why: a conversion bug in Whisper shows up as *slightly* different tokens on some clips, easy to
miss by eye. Here the same log-mel features go into three independent decoders — HF
`generate`, openai-whisper `decode` (our `.pt`) and CTranslate2 on the ORIGINAL wheel folder — and
the token sequences must be identical; we also report the largest logit difference on the same
token path. For LLM packs: the chat template renders and a greedy answer comes back.
"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from speechllm.errors import MissingToolError, ModelNotFoundError

DEFAULT_SENTENCES = (  # ones espeak-ng renders intelligibly enough for the tiny models
    "Hello, how are you today?",
    "Please open the window and close the door.",
    "Thank you very much for your help.",
)


def word_similarity(hyp: str, ref: str) -> float:
    """difflib ratio over lower-cased words without punctuation (1.0 = same words)."""
    def words(t: str) -> list[str]:
        return re.sub(r"[^a-z' ]", " ", t.lower()).split()

    return difflib.SequenceMatcher(None, words(hyp), words(ref)).ratio()


def espeak_waveforms(sentences: tuple[str, ...] | list[str], voice: str = "en-us") -> list[np.ndarray]:
    """Synthesise each sentence with espeak-ng (150 wpm) → validated 16 kHz mono waveforms (T,)."""
    from speechllm.data.audio import load_audio

    if shutil.which("espeak-ng") is None:
        raise MissingToolError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as d:
        out = []
        for i, s in enumerate(sentences):
            wav = Path(d) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), s], check=True)
            out.append(load_audio(wav))
    return out


def whisper_agreement(name_or_path: str, sentences=DEFAULT_SENTENCES, max_new_tokens: int = 40) -> dict:
    """Decode espeak sentences with HF, openai-whisper and CTranslate2 (original folder) from the
    same features; returns agreement counts, max logit differences, texts and timings."""
    import ctranslate2
    import torch
    import whisper
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer
    from transformers.modeling_outputs import BaseModelOutput

    from speechllm.packs.hub import CT2_SUBDIR, NO_HUB_KERNELS, resolve, whisper_openai_checkpoint

    path = resolve(name_or_path)
    if not (path / CT2_SUBDIR / "model.bin").exists():
        raise ModelNotFoundError(f"{path}: no {CT2_SUBDIR}/model.bin; the check needs a whisper pack")
    tok = WhisperTokenizer.from_pretrained(path)
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    multilingual = len(tok) >= 51865
    prompt = ["<|startoftranscript|>", *(["<|en|>", "<|transcribe|>"] if multilingual else []), "<|notimestamps|>"]
    prompt_ids = tok.convert_tokens_to_ids(prompt)
    feats = WhisperFeatureExtractor.from_pretrained(path)(
        espeak_waveforms(sentences), sampling_rate=16000, return_tensors="pt").input_features  # (B, 80, 3000)
    times = {}

    t0 = time.time()
    hf = WhisperForConditionalGeneration.from_pretrained(path, **NO_HUB_KERNELS).eval()
    lang = {"language": "en", "task": "transcribe"} if multilingual else {}
    with torch.no_grad():  # each backend encodes once: 30 s windows are slow on 2 CPU cores
        enc_hf = hf.model.encoder(feats).last_hidden_state  # (B, 1500, D)
        seqs = hf.generate(encoder_outputs=BaseModelOutput(last_hidden_state=enc_hf), max_new_tokens=max_new_tokens,
                           num_beams=1, do_sample=False, **lang)
    hf_tokens = [[t for t in s.tolist() if t < eot] for s in seqs]
    times["hf_s"] = round(time.time() - t0, 2)

    t0 = time.time()
    oa = whisper.load_model(str(whisper_openai_checkpoint(str(path))), device="cpu")
    with torch.no_grad():
        enc_oa = oa.encoder(feats)  # decode() accepts encoded audio as well as mels
        opts = whisper.DecodingOptions(without_timestamps=True, fp16=False, language="en",
                                       sample_len=max_new_tokens)
        oa_tokens = [list(r.tokens) for r in whisper.decode(oa, enc_oa, opts)]
    times["openai_s"] = round(time.time() - t0, 2)

    t0 = time.time()
    ct = ctranslate2.models.Whisper(str(path / CT2_SUBDIR), device="cpu", compute_type="float32")
    res = ct.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats.numpy())),
                      [prompt_ids] * len(feats), beam_size=1, max_length=max_new_tokens + len(prompt_ids),
                      return_logits_vocab=True)
    ct_tokens = [r.sequences_ids[0] for r in res]
    times["ct2_s"] = round(time.time() - t0, 2)

    diff_ct2, diff_oa = [], []
    p = len(prompt_ids)
    with torch.no_grad():  # teacher-forced logits of HF and openai on CT2's token path
        for i, toks in enumerate(ct_tokens):
            dec = torch.tensor([[*prompt_ids, *toks]])
            lh = hf(encoder_outputs=(enc_hf[i : i + 1],), decoder_input_ids=dec).logits[0]
            lc = np.stack([np.asarray(x) for x in res[i].logits[0]])  # (steps, V); suppressed = -FLT_MAX
            ok = lc > -1e30
            diff_ct2.append(float(np.abs(lc[ok] - lh[p - 1 : p - 1 + len(lc)].numpy()[ok]).max()))
            diff_oa.append(float((oa.decoder(dec, enc_oa[i : i + 1])[0] - lh).abs().max()))
    texts = [tok.decode(t).strip() for t in hf_tokens]
    agree = sum(a == b == c for a, b, c in zip(hf_tokens, oa_tokens, ct_tokens, strict=True))
    return {
        "model": str(path), "clips": len(feats), "token_agreement": agree,
        "hf_equals_openai": sum(a == b for a, b in zip(hf_tokens, oa_tokens, strict=True)),
        "hf_equals_ct2": sum(a == c for a, c in zip(hf_tokens, ct_tokens, strict=True)),
        "max_logit_diff_hf_vs_ct2": max(diff_ct2), "max_logit_diff_hf_vs_openai": max(diff_oa),
        "texts": texts, "references": list(sentences),
        "word_similarity": [round(word_similarity(t, s), 3) for t, s in zip(texts, sentences, strict=True)],
        "tokens": {"hf": hf_tokens, "openai": oa_tokens, "ct2": ct_tokens}, "seconds": times,
    }


def llm_chat_check(name_or_path: str, question: str = "What is the capital of France? Answer in one word.",
                   max_new_tokens: int = 16, speed_tokens: int = 32) -> dict:
    """Load the HF folder, render the chat template, greedy-answer one question; report speed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from speechllm.packs.hub import NO_HUB_KERNELS, resolve

    path = resolve(name_or_path)
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, **NO_HUB_KERNELS).eval()
    load_s = time.time() - t0
    prompt = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                     tokenize=False)
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[0, enc.input_ids.shape[1] :]
        t0 = time.time()  # speed: a second, forced-length run (the first one pays the warm-up)
        model.generate(**enc, max_new_tokens=speed_tokens, min_new_tokens=speed_tokens, do_sample=False)
        gen_s = time.time() - t0
    return {"model": str(path), "dtype": str(next(model.parameters()).dtype), "load_s": round(load_s, 2),
            "prompt": prompt, "answer": tok.decode(new, skip_special_tokens=True).strip(),
            "greedy_tokens_per_s": round(speed_tokens / gen_s, 1), "speed_tokens": speed_tokens,
            "pad_token": tok.pad_token, "eos_token": tok.eos_token}
