"""Slow tests on the real offline packs: the converted Whisper agrees with CTranslate2 and
openai-whisper token for token on the same features (speechllm/packs/verify.py); SmolLM2 chats.

Run: .venv/bin/python -m pytest tests/test_packs_real.py -m slow -q -s   (-s prints the figures)
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch

from speechllm.packs import hub
from speechllm.packs.verify import whisper_agreement

pytestmark = pytest.mark.slow

def test_whisper_tiny_hf_openai_ct2_decode_identically(whisper_tiny_path):
    """Same log-mel features of 3 espeak-ng sentences → identical tokens from HF generate,
    openai-whisper decode and CTranslate2 on the original wheel folder."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    r = whisper_agreement(str(whisper_tiny_path), max_new_tokens=24)  # the sentences need ~12
    print(json.dumps({k: r[k] for k in ("token_agreement", "max_logit_diff_hf_vs_ct2",
                                         "max_logit_diff_hf_vs_openai", "texts", "word_similarity", "seconds")}))
    assert r["tokens"]["hf"] == r["tokens"]["openai"] == r["tokens"]["ct2"]
    assert r["token_agreement"] == r["clips"] == 3
    assert all(len(t) >= 5 for t in r["tokens"]["hf"])  # real transcripts, not empty/degenerate
    assert r["max_logit_diff_hf_vs_ct2"] < 1e-3 and r["max_logit_diff_hf_vs_openai"] < 1e-3
    sim = r["word_similarity"]  # tiny.en on robotic espeak: close to what was spoken, not perfect
    assert min(sim) >= 0.5 and np.mean(sim) >= 0.75, r["texts"]


def test_whisper_tiny_pack_tokenizer_round_trips_text(whisper_tiny_path):
    from transformers import WhisperTokenizer, WhisperTokenizerFast

    from speechllm.packs.convert import derive_merges

    src = json.loads((whisper_tiny_path / hub.CT2_SUBDIR / "tokenizer.json").read_text())
    assert derive_merges(src["model"]["vocab"]) == src["model"]["merges"]  # tiny.en ships correct merges
    text = " Hello there, this is a test of the tokenizer."
    fast, slow = WhisperTokenizerFast.from_pretrained(whisper_tiny_path), WhisperTokenizer.from_pretrained(whisper_tiny_path)
    ids = fast(text, add_special_tokens=False).input_ids
    assert ids == slow(text, add_special_tokens=False).input_ids
    assert fast.decode(ids) == text


def test_smollm_pack_chats_and_resolve_is_idempotent(smollm_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta_before = (smollm_path / hub.PACK_JSON).stat().st_mtime_ns
    t0 = time.time()
    assert hub.resolve("smollm2-135m") == smollm_path == hub.pull("smollm2-135m")
    assert time.time() - t0 < 1.0 and (smollm_path / hub.PACK_JSON).stat().st_mtime_ns == meta_before

    tok = AutoTokenizer.from_pretrained(smollm_path)
    model = AutoModelForCausalLM.from_pretrained(smollm_path).eval()
    assert tok.pad_token == tok.eos_token == "<|im_end|>"  # SmolLM2: pad == eos, masks from attention_mask
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>user" in prompt and prompt.rstrip().endswith("<|im_start|>assistant")
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, enc.input_ids.shape[1] :], skip_special_tokens=True).strip()
    print(json.dumps({"smollm_answer": answer}))
    assert answer and "paris" in answer.lower()
