"""Chat prompts with audio: the tokenizer's own chat template + `<|audio|>` placeholders.

The placeholder is plain text in the rendered prompt; the model splits the prompt at each
placeholder and splices the adapter outputs there (so no token needs adding to the vocabulary and
the text-only path is untouched). With DeSTA2 interleaving the Whisper transcript follows the audio
embeddings as ordinary text.
"""

from __future__ import annotations

from collections.abc import Sequence

AUDIO_PLACEHOLDER = "<|audio|>"
DEFAULT_INSTRUCTION = "What can you hear from the audio?"
DEFAULT_SYSTEM_PROMPT = "Focus on the audio clips and instructions."
# What follows each audio placeholder when transcripts are interleaved (DeSTA2 puts the transcript
# right after the audio features).
TRANSCRIPT_TEMPLATE = ' Transcript: "{transcript}"'


def user_content(instruction: str, n_audio: int = 1, transcripts: Sequence[str | None] | None = None,
                 instruction_first: bool = False) -> str:
    """The user turn: one placeholder per audio (each optionally followed by its transcript), then the
    instruction; `instruction_first`: the instruction, then the audio. If the instruction already contains
    placeholders it is used as is."""
    if AUDIO_PLACEHOLDER in instruction or n_audio == 0:
        return instruction
    parts = []
    for i in range(n_audio):
        label = f"Audio {i + 1}: " if n_audio > 1 else ""
        t = transcripts[i] if transcripts is not None and i < len(transcripts) else None
        parts.append(label + AUDIO_PLACEHOLDER + (TRANSCRIPT_TEMPLATE.format(transcript=t) if t else ""))
    audio = "\n".join(parts)
    return f"{instruction}\n{audio}" if instruction_first else f"{audio}\n{instruction}"


def render_prompt(tokenizer, content: str, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> str:
    """Chat-templated text ending with the assistant header (generation prompt)."""
    msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": content}]
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def render_target(tokenizer, content: str, target: str, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
                  prompt_text: str | None = None) -> str:
    """The text the model must produce after the prompt, end-of-turn tokens included, taken from the
    chat template itself so each model learns its own turn format."""
    prompt_text = prompt_text if prompt_text is not None else render_prompt(tokenizer, content, system_prompt)
    msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": content}, {"role": "assistant", "content": target}]
    full = tokenizer.apply_chat_template(msgs, tokenize=False)
    if full.startswith(prompt_text) and target in full[len(prompt_text):]:
        return full[len(prompt_text):].rstrip("\n")  # keep the end-of-turn token, drop the trailing newline
    return target + (tokenizer.eos_token or "")


def split_at_placeholders(text: str) -> list[str]:
    """'a<|audio|>b<|audio|>c' -> ['a', 'b', 'c'] (n placeholders -> n+1 chunks)."""
    return text.split(AUDIO_PLACEHOLDER)
