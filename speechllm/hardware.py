"""Which number formats this machine computes natively.

bfloat16 is fast only where the hardware has it: GPUs from Ampere on, and CPUs with AVX512-BF16 or
AMX. Elsewhere torch emulates it, and on an AVX2-only CPU (measured: AMD EPYC, 2 cores) greedy
generation with SmolLM2-135M ran 3.4x slower in bfloat16 than in float32 (1.7 against 0.5 s a row).
So "auto" settings pick bfloat16 only where it is native.

    python -m speechllm.hardware precision   # prints bf16-mixed or 32-true (scripts/demo.sh uses it)
"""

from __future__ import annotations

import sys

import torch


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """True where bfloat16 matmuls run in hardware on `device` (a CUDA device, or this CPU)."""
    if torch.device(device).type == "cuda":
        # compute capability 8 (Ampere) or later: is_bf16_supported() also says yes where bf16 is only
        # emulated (T4, V100), which is slower than float16 there
        return torch.cuda.is_available() and torch.cuda.get_device_capability(torch.device(device))[0] >= 8
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_device(name: str = "auto") -> str:
    """A `--device` value as torch takes it: "auto" is CUDA when one is visible, else the CPU."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def auto_dtype(device: str | torch.device = "cpu") -> str:
    """"bfloat16" where it is native on `device`, else "float32"."""
    return "bfloat16" if native_bf16(device) else "float32"


def auto_precision(device: str | torch.device = "cpu") -> str:
    """Lightning's precision flag to match: "bf16-mixed" or "32-true"."""
    return "bf16-mixed" if native_bf16(device) else "32-true"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    what = argv[0] if argv else "precision"
    device = argv[1] if len(argv) > 1 else "cpu"  # the CPU recipes' accelerator
    if what not in ("precision", "dtype"):
        raise SystemExit(f"usage: python -m speechllm.hardware [precision|dtype] [cpu|cuda]; got {what!r}")
    print(auto_precision(device) if what == "precision" else auto_dtype(device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
