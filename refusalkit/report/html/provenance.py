"""Configuration and provenance: model, versions, file hashes, chat format, prompt splits; and
the adversarial system-prompt condition."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from refusalkit.report.html.elements import (
    as_dict,
    as_text,
    file_sha256,
    kv,
    table,
    td,
)
from refusalkit.report.svg import escape_text as _e
from refusalkit.runs.records import (
    Adversarial,
)


def adversarial_facts(record: Adversarial | None) -> list[tuple[str, str]]:
    """The adversarial system-prompt condition in one line; nothing for a run without one."""
    if record is None:
        return []
    splits = " and ".join(record.applied_to) or "?"
    text = f"condition {record.condition}, on {splits} prompts"
    if record.text:
        text += f" — “{record.text}”"
    if record.test_prompts:
        text += f"; test prompts {record.test_prompts}"
    return [("adversarial system prompt", _e(text))]


def provenance_section(run_dir: Path, config: Any, provenance: Any, splits: Any) -> str:
    provenance = as_dict(provenance)
    model, chat = as_dict(provenance.get("model")), as_dict(provenance.get("chat"))
    others = {k: v for k, v in provenance.items() if k not in ("model", "chat", "versions")}
    split_rows = []
    for label, entry in as_dict(splits).items():
        entry = as_dict(entry)
        for name, prompts in as_dict(entry.get("splits")).items():
            prompts = prompts if isinstance(prompts, list) else []
            hashes = "\n".join(str(as_dict(p).get("sha256", "")) for p in prompts)
            split_rows.append(
                [
                    td(_e(str(label))),
                    td(_e(str(entry.get("source", "–")))),
                    td(f"<code>{as_text(entry.get('source_sha256'))}</code>"),
                    td(_e(str(name))),
                    td(str(len(prompts)), num=True),
                    # One digest per split: equal digests mean the same prompts in the same order.
                    td(f"<code>{hashlib.sha256(hashes.encode()).hexdigest()[:16]}</code>"),
                ]
            )
    files = [
        [td(f"<code>{name}</code>"), td(f"<code>{file_sha256(run_dir / name)}</code>")]
        for name in ("config.json", "provenance.json", "splits.json")
        if (run_dir / name).is_file()
    ]
    splits_html = (
        table(["set", "source", "source sha256", "split", "n", "split digest"], split_rows)
        + '<p class="note">split digest: first 16 hex digits of sha256 over the newline-joined '
        "prompt hashes of that split, in order.</p>"
        if split_rows
        else '<p class="note">splits.json not found</p>'
    )
    # Short tables side by side so the long config table does not make the page endless.
    columns = [
        "<div><h3>Model</h3>" + kv(model),
        "<h3>Versions</h3>" + kv(as_dict(provenance.get("versions"))),
        "<h3>File hashes (sha256)</h3>" + table(["file", "sha256"], files) + "</div>",
        "<div><h3>Configuration (config.json)</h3>" + kv(as_dict(config)) + "</div>",
    ]
    return (
        '<h2 id="provenance">Configuration and provenance</h2>'
        + '<div class="cols">' + "".join(columns) + "</div>"
        + "<h3>Chat format</h3>" + kv(chat)
        + ("<h3>Other provenance</h3>" + kv(others) if others else "")
        + "<h3>Prompt splits</h3>" + splits_html
    )  # fmt: skip
