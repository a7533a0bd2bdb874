"""Shared fixtures: tiny offline models and tokenizers (see tests/tiny.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.tiny import FAMILY_TEMPLATE, make_adapter, make_model, make_tokenizer

# The tiny models gain nothing from intra-op parallelism, and on a busy 2-core machine every
# OpenMP barrier of a 2-thread matmul waits out a scheduler slice (measured: 16 ms instead of
# 0.08 ms per 64-wide linear while another process used the cores). One thread keeps the suite
# within two cores and fast whatever else runs; REFUSALKIT_TEST_THREADS overrides it.
torch.set_num_threads(int(os.environ.get("REFUSALKIT_TEST_THREADS", "1")))

# (family, template, tied embeddings): every family with its own template, tied and untied.
ADAPTER_COMBOS = [
    (family, template, tied)
    for family, template in FAMILY_TEMPLATE.items()
    for tied in (False, True)
]


def _combo_id(combo: tuple[str, str, bool]) -> str:
    family, template, tied = combo
    return f"{family}-{template}-{'tied' if tied else 'untied'}"


@pytest.fixture(scope="session")
def adapter_cache() -> dict[tuple[str, str, bool], object]:
    return {}


def _cached_adapter(cache: dict, combo: tuple[str, str, bool]):
    if combo not in cache:
        family, template, tied = combo
        cache[combo] = make_adapter(family, template, tie_embeddings=tied)
    adapter = cache[combo]
    # Tests must leave no hooks behind; a leaked hook would silently change every later test.
    for module in adapter.model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks, "leaked hook"
    return adapter


@pytest.fixture(params=ADAPTER_COMBOS, ids=[_combo_id(c) for c in ADAPTER_COMBOS])
def any_adapter(request, adapter_cache):
    """Every family (its own template), tied and untied embeddings."""
    return _cached_adapter(adapter_cache, request.param)


UNTIED_COMBOS = [c for c in ADAPTER_COMBOS if not c[2]]


@pytest.fixture(params=UNTIED_COMBOS, ids=[_combo_id(c) for c in UNTIED_COMBOS])
def family_adapter(request, adapter_cache):
    """One adapter per family (untied embeddings)."""
    return _cached_adapter(adapter_cache, request.param)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A tiny Qwen2-style model saved as a local model directory, as the CLI reads one."""
    directory = tmp_path_factory.mktemp("tiny-model")
    tokenizer = make_tokenizer("chatml")
    model = make_model("qwen2", tie_embeddings=True, n_layers=5, vocab_size=len(tokenizer),
                       pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
