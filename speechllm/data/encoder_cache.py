"""Optional on-disk cache of the frozen encoder's tapped hidden states, keyed by clip and settings.

The encoder is frozen, so a clip's tapped states never change during training: a multi-epoch run
computes them once and reads them back afterwards (`model.encoder_cache_dir`). One safetensors file
per clip under `<root>/<settings key>/<hash[:2]>/<hash>.safetensors`, written atomically (temp file +
rename), so several ranks can share one cache folder and a killed run leaves no torn file.

The settings key hashes `WhisperEncoder.settings()`, everything that changes the states (encoder name,
tapped layers, real-length cropping, dtype, front-end version): a run with other settings uses another
sub-folder, never stale states.

States are computed clip by clip, each cropped to its own length: Whisper's encoder has no attention
mask, so with real-length cropping a clip's states would otherwise depend on the longest clip of the
batch that first computed it, and a cached run would not be reproducible.

Size: layers x frames x width x bytes per clip, e.g. whisper-small, 4 layers, 10 s (500 frames),
bf16: 4 * 500 * 768 * 2 = 3 MB. Worth it for repeated epochs over up to ~10^5 clips; see
docs/scale_out.md for when recomputing is cheaper than storing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1


def batch_clip_ids(batch: dict) -> list[str]:
    """The cache key of each row's clip: `clip_id` (rows of one clip share it) or the row id, with its file."""
    return [str(k) for k in batch.get("clip_ids", batch["ids"])]


def one_clip_per_row(batch: dict) -> bool:
    """Caches are keyed per clip, so they serve only batches in which every row has exactly one clip (a
    text-only row beside a two-clip row gives as many clips as rows, but not one each)."""
    return "input_features" in batch and bool((batch["audio_counts"] == 1).all())


def encoder_cache_key(settings: dict) -> str:
    """Short stable hash of `WhisperEncoder.settings()` (the settings that determine the states),
    the cache's sub-folder name."""
    blob = json.dumps({**settings, "v": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class DiskEncoderCache:
    def __init__(self, root: str | Path, key: str, settings: dict | None = None):
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        if settings is not None and not (self.dir / "settings.json").exists():
            _atomic_write_bytes(self.dir / "settings.json", json.dumps(settings, indent=1).encode())
        self.hits = self.misses = 0

    def _path(self, clip_id: str) -> Path:
        h = hashlib.sha1(clip_id.encode()).hexdigest()
        return self.dir / h[:2] / f"{h}.safetensors"

    def get(self, clip_id: str) -> tuple[list[torch.Tensor], int] | None:
        path = self._path(clip_id)
        if not path.exists():
            return None
        t = load_file(str(path))
        n = int(t["length"])
        return [t[f"layer{i}"] for i in range(len(t) - 1)], n

    def put(self, clip_id: str, hidden: list[torch.Tensor], length: int) -> None:
        tensors = {f"layer{i}": h.detach().contiguous().cpu() for i, h in enumerate(hidden)}
        tensors["length"] = torch.tensor(int(length))
        path = self._path(clip_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"id": clip_id})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def batch_states(self, encoder, batch: dict) -> tuple[list[torch.Tensor], torch.Tensor] | None:
        """Tapped states for a batch of single-audio rows, padded like the encoder's own output;
        None (run the encoder as usual) when rows carry several clips."""
        if not one_clip_per_row(batch):
            return None
        items = []
        for i, clip_id in enumerate(batch_clip_ids(batch)):
            got = self.get(clip_id)
            if got is None:
                self.misses += 1
                n_feat = int(batch["feature_lengths"][i])
                feats = batch["input_features"][i : i + 1]
                if encoder.real_length:  # the clip alone, with the margin of its own padding the conv needs
                    from speechllm.model.encoder import FRONT_MARGIN, MAX_FRAMES

                    feats = feats[..., : min(MAX_FRAMES, n_feat + FRONT_MARGIN)]
                hidden, enc_len = encoder(feats, batch["feature_lengths"][i : i + 1])
                n = int(enc_len[0])
                got = ([h[0, :n] for h in hidden], n)
                self.put(clip_id, *got)
            else:
                self.hits += 1
            items.append(got)
        dev = batch["input_features"].device
        t = max(n for _, n in items)
        hidden = [torch.nn.utils.rnn.pad_sequence([it[0][li] for it in items], batch_first=True)[:, :t].to(dev)
                  for li in range(len(items[0][0]))]
        return hidden, torch.tensor([n for _, n in items], device=dev)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
