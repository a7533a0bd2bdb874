"""Progress bars for long stages (tqdm, with ETA); silent when disabled."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_enabled = True


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    yield from tqdm(items, desc=description, total=total, disable=not _enabled, leave=False,
                    dynamic_ncols=True)  # fmt: skip


def bar(description: str, total: int) -> tqdm:
    return tqdm(
        desc=description, total=total, disable=not _enabled, leave=False, dynamic_ncols=True
    )
