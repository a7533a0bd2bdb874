"""The HTML report: SVG charts are valid and mark what they should, the page is self-contained and
escapes user text, and real run/compare directories of a tiny model render in headless Chromium
with every image loaded and no console error."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path

import pytest

from refusalkit.cli import main
from refusalkit.errors import RefusalkitError
from refusalkit.report import render_html, svg, write_html_report
from tests.chromium import check_page, find_chromium

SMALL = ["--n-train", "6", "--n-val", "3", "--n-test", "3", "--max-new-tokens", "3",
         "--kl-threshold", "1000", "--quiet"]  # fmt: skip
NS = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert('x')</script> see https://evil.example/a.png & http://x.test \x07"


# ---------------------------------------------------------------------------------------------
# fixtures: real directories from the CLI on a tiny model


@pytest.fixture(scope="module")
def run_dir(model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    assert main(["run", "--model", str(model_dir), *SMALL, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def compare_dir(model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "cmp"
    args = ["compare", "--model", str(model_dir), *SMALL, "--induce-threshold", "-1000"]
    assert main([*args, "--out", str(out)]) == 0
    return out


def _rate_block(n: int, base: int, inter: int) -> dict:
    return {"n": n, "baseline_refusal_rate": base / n, "intervention_refusal_rate": inter / n,
            "baseline_refusal_count": base, "intervention_refusal_count": inter}  # fmt: skip


@pytest.fixture(scope="module")
def rich_run_dir(run_dir, tmp_path_factory) -> Path:
    """The real run plus every optional key announced for summary/completions, hostile user
    text, and a candidate with null scores and status 'nan'."""
    out = tmp_path_factory.mktemp("report") / "rich"
    shutil.copytree(run_dir, out)
    summary = json.loads((out / "summary.json").read_text())
    evaluation = summary["evaluation"]
    evaluation["harmful"]["per_category"] = {"weapons": _rate_block(2, 2, 0),
                                             "fraud": _rate_block(1, 1, 1)}  # fmt: skip
    evaluation["harmless"]["per_category"] = {"cooking": _rate_block(3, 0, 2)}
    evaluation["judges"] = {"logodds": {"harmful": _rate_block(3, 2, 1),
                                        "harmless": _rate_block(3, 0, 1)}}  # fmt: skip
    evaluation["coherence"] = {"kl": 0.0591, "baseline_cross_entropy": 1.25,
                               "intervention_cross_entropy": 1.31, "n_tokens": 640}  # fmt: skip
    evaluation["over_refusal"] = _rate_block(8, 3, 1)
    (out / "summary.json").write_text(json.dumps(summary))
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    rows[0]["completion"] = HOSTILE
    rows[0]["prompt"] = rows[-1]["prompt"] = HOSTILE  # first harmful pair and a harmless one
    for row in rows:
        row["refusal_log_odds"] = -1.5
        row["judges"] = {"substring": row["refusal"], "logodds": True}
    rows.append({**rows[0], "set": "over_refusal", "prompt": "How do I kill a Python process?"})
    (out / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    selection = json.loads((out / "selection.json").read_text())
    candidate = next(c for c in selection["candidates"] if c["status"] == "not_needed")
    candidate.update(s_comply=None, s_refuse=None, score=None, status="nan")
    (out / "selection.json").write_text(json.dumps(selection))
    return out


# ---------------------------------------------------------------------------------------------
# SVG functions


def _parse(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == f"{NS}svg" and float(root.get("width")) > 0 < float(root.get("height"))
    return root


def _cells(root: ET.Element, cls: str) -> list[ET.Element]:
    return [r for r in root.iter(f"{NS}rect") if r.get("class") == cls]


def test_heatmap_one_rect_per_cell_pick_outlined_nan_grey():
    values = [[0.1, 0.5, None, 0.9], [float("nan"), 0.2, 0.3, 0.4], [0.0, 1.0, 0.6, 0.7]]
    rows, columns = ["-3 'a'", "-2 '<b>'", "-1 '\\n'"], ["0", "1", "2", "3"]
    text = svg.heatmap(values, rows, columns, title="S <refuse> & co \x01", pick=(2, 1),
                       filtered=[(0, 3), (1, 0)])  # fmt: skip
    root = _parse(text)
    cells = _cells(root, "cell")
    assert len(cells) == 12
    # Row-major order: the None and NaN cells are the plain grey, every other cell a ramp colour.
    grey = [i for i, c in enumerate(cells) if c.get("fill") == "#c8c8c8"]
    assert grey == [2, 4]
    (pick,) = _cells(root, "pick")
    picked = cells[2 * 4 + 1]
    assert float(pick.get("x")) > float(picked.get("x"))
    assert float(pick.get("x")) + float(pick.get("width")) < float(picked.get("x")) + float(
        picked.get("width")
    )
    assert abs(float(pick.get("y")) - float(picked.get("y")) - 1.5) < 1e-6
    assert len(_cells(root, "filtered")) == 2
    assert "S <refuse> & co \\x01" in "".join(root.itertext())
    # Dark = better: the maximum is darkest by default, lightest when lower is better.
    assert cells[9].get("fill") == svg.colour(1.0) and cells[8].get("fill") == svg.colour(0.0)
    flipped = _cells(_parse(svg.heatmap(values, [], [], title="t", higher_is_better=False)), "cell")
    assert flipped[9].get("fill") == svg.colour(0.0)


def test_heatmap_without_any_value_and_with_pick_outside():
    root = _parse(svg.heatmap([[None, None]], ["-1"], ["0", "1"], title="KL", pick=(5, 5)))
    assert len(_cells(root, "cell")) == 2 and not _cells(root, "pick")
    assert "min –" in "".join(root.itertext())


def test_line_chart_highlights_and_gaps():
    root = _parse(svg.line_chart([1.0, 0.8, None, 0.4, 0.35], title="sim", x_label="layer",
                                 y_label="cos", highlight=[3, 4], marker=1))  # fmt: skip
    circles = list(root.iter(f"{NS}circle"))
    assert sum(c.get("class") == "highlight" for c in circles) == 2
    assert sum(c.get("class") == "point" for c in circles) == 2
    assert len(list(root.iter(f"{NS}polyline"))) == 2  # the None splits the line
    assert len([x for x in root.iter(f"{NS}line") if x.get("class") == "marker"]) == 1


def test_bar_chart_bars_whiskers_and_missing_values():
    bars = [[(0.17, 0.10, 0.28), (0.0, 0.0, 0.06)], [(None, None, None), (0.5, 0.3, 0.7)]]
    root = _parse(svg.bar_chart(["harmful", "harm<less>"], ["baseline", "intervention"], bars,
                                title="rates", y_label="rate"))  # fmt: skip
    assert len(_cells(root, "bar")) == 3  # a rate of 0 still gets a (2 px) bar
    assert len([p for p in root.iter(f"{NS}path") if p.get("class") == "whisker"]) == 3
    texts = "".join(root.itertext())
    assert "0.17" in texts and "–" in texts and "harm<less>" in texts


def test_nice_ticks_and_data_uri():
    assert svg.nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert svg.nice_ticks(0.33, 1.04)[0] >= 0.33 and svg.nice_ticks(0.33, 1.04)[-1] <= 1.04
    assert svg.nice_ticks(2.0, 2.0) == [2.0]
    uri = svg.data_uri("<svg/>")
    assert uri.startswith("data:image/svg+xml;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == b"<svg/>"


# ---------------------------------------------------------------------------------------------
# the page


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Collect()
    parser.feed(page)
    return parser.tags


def _check_self_contained(page: str, user_texts: Sequence[str] = ()) -> int:
    """Every image an SVG data URI with alt text, no link out, one (our) script; returns the
    number of images."""
    tags = _tags(page)
    images = [attrs for tag, attrs in tags if tag == "img"]
    for attrs in images:
        assert attrs["src"].startswith("data:image/svg+xml;base64,") and attrs.get("alt")
        ET.fromstring(base64.b64decode(attrs["src"].split(",", 1)[1]))
    for tag, attrs in tags:
        for name in ("src", "href", "action", "srcset", "poster"):
            value = attrs.get(name)
            assert value is None or value.startswith(("data:", "#")), (tag, name, value)
    assert [tag for tag, _ in tags].count("script") == 1 and "<link" not in page
    # No URL outside escaped user text (the SVG namespace URI lives inside the base64 data).
    stripped = page
    for text in user_texts:
        stripped = stripped.replace(svg.escape_text(text), "")
    assert "http://" not in stripped and "https://" not in stripped
    return len(images)


def test_run_report_contents(run_dir):
    page = render_html(run_dir)
    selection = json.loads((run_dir / "selection.json").read_text())
    n_images = _check_self_contained(page)
    assert n_images == 1 + 1 + 4  # rate bars, L_low curve, 4 heatmaps
    for text in ("refusalkit run report", "Refusal rates", "Selection", "Sample completions",
                 "Configuration and provenance", "0.00 (0/3, 95% CI 0.00–0.56)",
                 f"position {selection['position']}", "Qwen2ForCausalLM", "source sha256",
                 "split digest", "transformers"):  # fmt: skip
        assert text in page, text
    rows = [json.loads(line) for line in (run_dir / "completions.jsonl").read_text().splitlines()]
    n = sum(r["condition"] == "intervention" for r in rows)
    count = sum(r["degenerate"] for r in rows if r["condition"] == "intervention")
    assert "Degenerate outputs under intervention" in page and f"({count}/{n}, 95% CI" in page


def test_write_html_report_writes_report_html(run_dir):
    path = write_html_report(run_dir)
    assert path == run_dir / "report.html"
    assert path.read_text(encoding="utf-8") == render_html(run_dir)
    assert not list(run_dir.glob(".report.html.*"))  # no temporary file left behind


def test_optional_keys_and_hostile_text(rich_run_dir):
    page = render_html(rich_run_dir)
    _check_self_contained(page, [HOSTILE])
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)" in page
    assert "\\x07" in page and "\x07" not in page
    for text in ("harmful by category", "weapons", "1.00 (2/2, 95% CI", "harmless by category",
                 "All judges", "logodds", "Coherence", "baseline_cross_entropy", "1.3100",
                 "over_refusal", "0.38 (3/8, 95% CI 0.14–0.69)", "refusal_log_odds: -1.5",
                 "substring: no", "nan 1"):  # fmt: skip
        assert text in page, text


def test_compare_report_contents(compare_dir):
    page = render_html(compare_dir)
    assert _check_self_contained(page) == 1 + 2 * (1 + 4) + 2 * 3  # bars; cosmic ×2; r-s ×2
    rows = json.loads((compare_dir / "comparison.json").read_text())["rows"]
    for row in rows:
        name = f"{row['selector']}-{row['steering']}"
        assert f'id="method-{name}"' in page and f'href="#method-{name}"' in page
    assert "bypass: refusal score" in page and "Baselines (no intervention" in page


def test_compare_report_shows_a_method_without_selection(compare_dir, tmp_path):
    out = tmp_path / "cmp"
    shutil.copytree(compare_dir, out)
    comparison = json.loads((out / "comparison.json").read_text())
    comparison["rows"][2] = {"selector": "refusal-score", "steering": "lce",
                             "error": "the induce filter removed <everything>"}  # fmt: skip
    (out / "comparison.json").write_text(json.dumps(comparison))
    selection_file = out / "selection-refusal-score-lce.json"
    selection = json.loads(selection_file.read_text())
    for key in ("position", "layer", "score", "kl"):
        del selection[key]
    selection_file.write_text(json.dumps(selection))
    page = render_html(out)
    assert page.count("no selection: the induce filter removed &lt;everything&gt;") == 2
    # Its candidates' scores are still plotted, with no pick marked.
    section = page.split('<h2 id="method-refusal-score-lce">')[1].split("<h2")[0]
    images = [a["src"] for tag, a in _tags(section) if tag == "img"]
    assert len(images) == 3
    assert all(b'class="pick"' not in base64.b64decode(src.split(",", 1)[1]) for src in images)
    selection_file.unlink()
    assert 'id="method-refusal-score-lce"' not in render_html(out)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(RefusalkitError, match="refusalkit run"):
        render_html(tmp_path)


# ---------------------------------------------------------------------------------------------
# in a real browser


def _require_chromium() -> str:
    """Chromium's path; without it skip, except in CI, where a missing browser is a failure."""
    path = find_chromium()
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI is set but chromium is missing: .ci/run must install it (apt chromium)")
        pytest.skip("chromium not installed (apt-get install chromium); the browser check needs it")
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    return _require_chromium()


def test_missing_chromium_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "find_chromium", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium not installed"):
        _require_chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set but chromium is missing"):
        _require_chromium()


def _assert_clean_in_browser(chromium: str, directory: Path, tmp_path: Path) -> bytes:
    path = write_html_report(directory)
    n_images = len(re.findall(r"<img ", path.read_text(encoding="utf-8")))
    result = check_page(path, chromium, screenshot=True)
    assert result.errors == []
    assert result.dataset == {"imagesLoaded": str(n_images), "imagesTotal": str(n_images),
                              "errors": "0"}  # fmt: skip
    shot = result.screenshot or b""
    assert shot.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(shot[16:20], "big"), int.from_bytes(shot[20:24], "big")
    assert width == 1280 and height > 1500  # the whole page, not just the first screen
    (tmp_path / f"{directory.name}.png").write_bytes(shot)
    return shot


def test_browser_check_catches_injected_errors(chromium, run_dir, tmp_path):
    """The detector itself: a broken image, a blocked external image, a blocked injected script
    and (on a page without our CSP) an exception and console.error must all be reported."""
    page = render_html(run_dir)
    start = page.index("data:image/svg+xml;base64,")
    page = page[:start] + "data:image/svg+xml;base64,AAAA" + page[page.index('"', start) :]
    page = page.replace("</main>", '<img src="https://example.invalid/x.png" alt="x">'
                                   "<script>undefinedFunction()</script></main>")  # fmt: skip
    (tmp_path / "bad.html").write_text(page, encoding="utf-8")
    result = check_page(tmp_path / "bad.html", chromium)
    assert int(result.dataset["imagesLoaded"]) == int(result.dataset["imagesTotal"]) - 2
    assert any("example.invalid" in e for e in result.errors)  # CSP blocked the fetch
    assert any("inline script" in e for e in result.errors)
    (tmp_path / "plain.html").write_text(
        "<!DOCTYPE html><body><script>console.error('injected');undefinedFunction()</script>"
    )
    errors = check_page(tmp_path / "plain.html", chromium, dataset_wait=0).errors
    assert any("console.error: injected" in e for e in errors)
    assert any("undefinedFunction is not defined" in e for e in errors)


def test_run_report_in_browser(chromium, run_dir, tmp_path):
    _assert_clean_in_browser(chromium, run_dir, tmp_path)


def test_rich_run_report_in_browser(chromium, rich_run_dir, tmp_path):
    _assert_clean_in_browser(chromium, rich_run_dir, tmp_path)


def test_compare_report_in_browser(chromium, compare_dir, tmp_path):
    _assert_clean_in_browser(chromium, compare_dir, tmp_path)
