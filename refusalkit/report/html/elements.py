"""The building blocks of the report pages: run files read leniently, numbers and values as
escaped text, table cells, fact lists and images."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from refusalkit.evaluation.metrics import Rate
from refusalkit.io import read_json, read_jsonl
from refusalkit.report import svg
from refusalkit.report.svg import escape_text as _e


def load_json(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path) if path.is_file() else []


def as_dict(x: Any) -> dict[str, Any]:
    """``x`` if it is a dict, else an empty one: a missing or malformed block renders as absent."""
    return x if isinstance(x, dict) else {}


def number(x: Any, digits: int = 4) -> str:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return "–"
    return str(x) if isinstance(x, int) else f"{x:.{digits}f}"


def as_text(x: Any) -> str:
    """Any config/provenance value as escaped text; containers as compact JSON."""
    if x is None:
        return "–"
    if isinstance(x, str):
        return _e(x)
    if isinstance(x, float):
        return repr(x)  # shortest exact form: 0.1, not 0.100000
    return _e(json.dumps(x, ensure_ascii=False))


def token_html(token: Any) -> str:
    """A token made visible: repr shows newlines and spaces, which are most of the P tokens."""
    return _e(repr(token)) if isinstance(token, str) else "?"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """Headers are trusted literals; cells must already be escaped HTML."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def td(html: str, num: bool = False, rate: bool = False) -> str:
    if rate:  # a narrow rate cell may wrap only before the interval, never inside it
        html = html.replace(", 95% CI ", ', <span class="ci">95% CI ', 1)
        html += "</span>" if 'class="ci"' in html else ""
    cls = " ".join(c for c, on in (("num", num or rate), ("rate", rate)) if on)
    return f'<td class="{cls}">{html}</td>' if cls else f"<td>{html}</td>"


def kv(mapping: Mapping[str, Any]) -> str:
    rows = [[td(f"<code>{_e(str(k))}</code>"), td(as_text(v))] for k, v in mapping.items()]
    return table(["key", "value"], rows, "kv") if rows else '<p class="note">not recorded</p>'


def facts_block(items: Iterable[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def img(chart: str, alt: str) -> str:
    return f'<img src="{svg.data_uri(chart)}" alt="{_e(alt)}">'


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "–"


def rate_text(rate: Rate | None) -> str:
    """A rate as text, always with its count and 95% interval; "–" where there is none (nothing
    recorded, or nothing judged)."""
    return "–" if rate is None or rate.n == 0 else rate.describe()


def interval(rate: Rate | None) -> svg.Interval:
    """A rate as a bar or point with its 95% interval; empty where there is none."""
    if rate is None or rate.n == 0:
        return (None, None, None)
    low, high = rate.ci95
    return (rate.value, low, high)


def pending_or_file(run_dir: Path, name: str, pending: Mapping[str, Any]) -> Any:
    """A result file as the finished directory will hold it: its pending content, where a
    workflow renders the report before writing the file, else the file (None if missing)."""
    return pending[name] if name in pending else load_json(run_dir / name)
