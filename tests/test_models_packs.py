"""Slow tests on the real offline packs: the converted Whisper agrees with CTranslate2 and
openai-whisper token for token on the same features; the SmolLM2 pack chats.

Run: .venv/bin/python -m pytest tests/test_models_packs.py -m slow -q -s   (-s prints the figures)
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch

from speechllm.data.audio import load_audio
from speechllm.models import hub

pytestmark = pytest.mark.slow

SENTENCES = [  # ones espeak-ng renders intelligibly enough for tiny.en
    "Hello, how are you today?",
    "Please open the window and close the door.",
    "Thank you very much for your help.",
]
SOT, NO_TS, EOT = 50257, 50362, 50256


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


@pytest.fixture(scope="module")
def espeak_features(whisper_tiny_path, tmp_path_factory):
    """(B, 80, 3000) log-mel features of 3 espeak-ng sentences, computed once and fed to all decoders."""
    from transformers import WhisperFeatureExtractor

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    d = tmp_path_factory.mktemp("espeak")
    wavs = []
    for i, s in enumerate(SENTENCES):
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(d / f"{i}.wav"), s], check=True)
        wavs.append(load_audio(d / f"{i}.wav"))
    fe = WhisperFeatureExtractor.from_pretrained(whisper_tiny_path)
    return fe(wavs, sampling_rate=16000, return_tensors="pt").input_features


def test_whisper_tiny_hf_openai_ct2_decode_identically(whisper_tiny_path, espeak_features):
    import ctranslate2
    import whisper
    from transformers import WhisperForConditionalGeneration, WhisperTokenizer
    from transformers.modeling_outputs import BaseModelOutput

    feats = espeak_features  # (3, 80, 3000)
    hf = WhisperForConditionalGeneration.from_pretrained(whisper_tiny_path).eval()
    with torch.no_grad():  # each model encodes once (2 CPU cores are slow on 3 x 30 s windows)
        enc_hf = hf.model.encoder(feats).last_hidden_state  # (3, 1500, 384)
        seqs = hf.generate(encoder_outputs=BaseModelOutput(last_hidden_state=enc_hf), max_new_tokens=40,
                           num_beams=1, do_sample=False)
    hf_tokens = [[t for t in s.tolist() if t < EOT] for s in seqs]  # drop SOT/NO_TS/EOT/padding

    oa = whisper.load_model(str(hub.whisper_openai_checkpoint("whisper-tiny.en")), device="cpu")
    opts = whisper.DecodingOptions(without_timestamps=True, fp16=False, language="en")
    with torch.no_grad():
        enc_oa = oa.encoder(feats)  # (3, 1500, 384); decode() accepts encoded audio too
    oa_tokens = [list(r.tokens) for r in whisper.decode(oa, enc_oa, opts)]

    ct = ctranslate2.models.Whisper(str(whisper_tiny_path / hub.CT2_SUBDIR), device="cpu", compute_type="float32")
    res = ct.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats.numpy())),
                      [[SOT, NO_TS]] * len(feats), beam_size=1, max_length=40, return_logits_vocab=True)
    ct_tokens = [r.sequences_ids[0] for r in res]

    agree = sum(a == b == c for a, b, c in zip(hf_tokens, oa_tokens, ct_tokens, strict=True))
    # logits of each decoder on CT2's own token path (CT2 marks suppressed entries with -FLT_MAX)
    diffs_ct2, diffs_oa = [], []
    with torch.no_grad():
        for i, toks in enumerate(ct_tokens):
            dec = torch.tensor([[SOT, NO_TS, *toks]])
            lh = hf(encoder_outputs=(enc_hf[i : i + 1],), decoder_input_ids=dec).logits[0]
            lc = np.stack([np.asarray(x) for x in res[i].logits[0]])
            ok = lc > -1e30
            diffs_ct2.append(float(np.abs(lc[ok] - lh[1 : 1 + len(lc)].numpy()[ok]).max()))
            diffs_oa.append(float((oa.decoder(dec, enc_oa[i : i + 1])[0] - lh).abs().max()))
    tok = WhisperTokenizer.from_pretrained(whisper_tiny_path)
    texts = [tok.decode(t).strip() for t in hf_tokens]
    sim = [difflib.SequenceMatcher(None, _words(t), _words(s)).ratio() for t, s in zip(texts, SENTENCES, strict=True)]
    print(json.dumps({"token_agreement": f"{agree}/{len(feats)}", "max_logit_diff_hf_vs_ct2": max(diffs_ct2),
                      "max_logit_diff_hf_vs_openai": max(diffs_oa), "texts": texts,
                      "word_similarity": [round(s, 2) for s in sim]}, indent=1))
    assert hf_tokens == oa_tokens == ct_tokens
    assert max(diffs_ct2) < 1e-3 and max(diffs_oa) < 1e-3
    assert min(sim) >= 0.5 and np.mean(sim) >= 0.75, texts  # tiny.en on robotic espeak: close, not perfect


def test_whisper_tiny_pack_tokenizer_round_trips_text(whisper_tiny_path):
    from transformers import WhisperTokenizer, WhisperTokenizerFast

    from speechllm.models.convert import derive_merges

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
