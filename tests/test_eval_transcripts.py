"""The evaluation transcript store: each clip is transcribed once per transcriber, across processes."""

import numpy as np

from evaluation.transcripts import CachedTranscripts, store_path


class CountingASR:
    def __init__(self):
        self.seen = []

    def __call__(self, wavs):
        self.seen += [float(w[0]) for w in wavs]
        return [f"clip {w[0]:.0f}" for w in wavs]


def wavs(*vals):
    return [np.full(160, v, dtype=np.float32) for v in vals]


def test_store_is_read_back_by_a_later_process(tmp_path):
    path = store_path(tmp_path, "whisper-tiny.en", "float32")
    first = CountingASR()
    assert CachedTranscripts(first, path)(wavs(1, 2, 1)) == ["clip 1", "clip 2", "clip 1"]
    assert first.seen == [1.0, 2.0]  # a clip twice in one call is transcribed once
    later = CountingASR()
    assert CachedTranscripts(later, path)(wavs(2, 3)) == ["clip 2", "clip 3"]
    assert later.seen == [3.0]


def test_torn_last_line_is_transcribed_again(tmp_path):
    path = store_path(tmp_path, "whisper-tiny.en", "float32")
    CachedTranscripts(CountingASR(), path)(wavs(1, 2))
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # kill -9 in the middle of the second row
    again = CountingASR()
    assert CachedTranscripts(again, path)(wavs(1, 2)) == ["clip 1", "clip 2"]
    assert again.seen == [2.0]


def test_transcribers_precisions_and_devices_do_not_share_a_store(tmp_path):
    names = {store_path(tmp_path, "whisper-tiny.en", "float32"), store_path(tmp_path, "whisper-tiny.en", "bfloat16"),
             store_path(tmp_path, "whisper-base.en", "float32"), store_path(tmp_path, "/a/b:c", "float32"),
             store_path(tmp_path, "whisper-tiny.en", "float32", "cuda:1")}
    assert len(names) == 5 and all(p.parent == tmp_path for p in names)
    # a CPU store keeps its earlier name (existing caches stay valid); cuda:0 and cuda:1 share one
    assert store_path(tmp_path, "whisper-tiny.en", "float32", "cpu").name == "whisper-tiny.en__float32.jsonl"
    assert store_path(tmp_path, "w", "float32", "cuda:0") == store_path(tmp_path, "w", "float32", "cuda")


def test_share_transcripts_keys_the_store_by_the_encoders_device(tmp_path):
    from types import SimpleNamespace

    import torch

    from evaluation.controls import share_transcripts

    class Encoder(torch.nn.Module):  # "meta" stands in for "cuda": any device but the CPU gets its own store
        def __init__(self, device):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1, device=device))

        def transcribe(self, wavs):
            return ["text"] * len(wavs)

    paths = []
    for device in ("cpu", "meta"):
        model = SimpleNamespace(encoder=Encoder(device), config=SimpleNamespace(encoder="whisper-tiny.en", dtype="float32"))
        paths.append(share_transcripts(model, tmp_path).encoder.transcribe.store.path)
    assert paths == [store_path(tmp_path, "whisper-tiny.en", "float32"),
                     store_path(tmp_path, "whisper-tiny.en", "float32", "meta")]
