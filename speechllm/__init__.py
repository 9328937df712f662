"""speechllm: train speech-aware LLMs the DeSTA way (frozen Whisper + adapter + frozen LLM)."""

__version__ = "0.1.0"
