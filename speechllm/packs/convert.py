"""Model format converters, in one import: GGUF → HF causal LM, CTranslate2 Whisper → HF Whisper,
HF Whisper → openai-whisper `.pt`. The implementations live in `convert_gguf.py`,
`convert_whisper.py` and `whisper_tokenizer.py`; `CONVERTER_VERSION` is recorded in every pack.json
and bumps whenever the output of a converter changes.
"""

from __future__ import annotations

from speechllm.packs.convert_gguf import gguf_to_hf
from speechllm.packs.convert_whisper import (
    Ct2Model,
    ct2_to_hf,
    ct2_whisper_state_dict,
    hf_key_to_openai,
    hf_to_openai_state,
    hf_to_openai_whisper,
    load_hf_state_dict,
    read_ct2,
)
from speechllm.packs.whisper_tokenizer import derive_merges, write_whisper_tokenizer

CONVERTER_VERSION = "1"

__all__ = [
    "CONVERTER_VERSION", "Ct2Model", "ct2_to_hf", "ct2_whisper_state_dict", "derive_merges", "gguf_to_hf",
    "hf_key_to_openai", "hf_to_openai_state", "hf_to_openai_whisper", "load_hf_state_dict", "read_ct2",
    "write_whisper_tokenizer",
]
