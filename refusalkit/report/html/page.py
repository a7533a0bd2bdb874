"""The page shell: the inline script, its Content-Security-Policy and the stylesheet."""

from __future__ import annotations

import base64
import hashlib

from refusalkit.report.svg import escape_text as _e

# Sets a data attribute on <body> once everything has loaded, so a headless browser (or a person
# with devtools) can check that every image decoded and no script error happened.
_SCRIPT = (
    "(function(){var errors=0;window.onerror=function(){errors+=1;"
    "document.body.dataset.errors=errors;};window.addEventListener('load',function(){"
    "var imgs=document.images,ok=0;for(var i=0;i<imgs.length;i++){"
    "if(imgs[i].complete&&imgs[i].naturalWidth>0){ok+=1;}}var d=document.body.dataset;"
    "d.imagesLoaded=ok;d.imagesTotal=imgs.length;d.errors=errors;});})();"
)
# The CSP allows exactly this script (by hash), inline styles and data: images; nothing else.
_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-"
    + base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    + "'"
)
_CSS = """
body { font-family: system-ui, "DejaVu Sans", sans-serif; margin: 0; color: #1b1b1b;
  background: #fafafa; line-height: 1.45; }
main { max-width: 1240px; margin: 0 auto; padding: 20px 28px 60px; }
h1 { font-size: 1.6em; margin: .2em 0; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 1.8em; }
h3 { margin: 1.2em 0 .4em; }
code, .completion { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; }
code { font-size: .92em; }
table { border-collapse: collapse; margin: .5em 0 1em; background: #fff; }
th, td { border: 1px solid #d4d4d4; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td code { white-space: nowrap; }
.compact td.rate { white-space: normal; }
.ci { white-space: nowrap; }
.kv td:last-child { white-space: pre-wrap; word-break: break-word; max-width: 640px; }
.wide { overflow-x: auto; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; width: fit-content;
  background: #fff; border: 1px solid #ddd; padding: 10px 14px; }
.facts dt { font-weight: 600; color: #444; }
.facts dd { margin: 0; }
.plots { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
.plots img { max-width: 100%; height: auto; border: 1px solid #e2e2e2; background: #fff; }
.cols { display: flex; flex-wrap: wrap; gap: 0 28px; align-items: flex-start; }
.completion { font-size: .85em; white-space: pre-wrap; word-break: break-word; max-height: 14em;
  overflow: auto; background: #f6f6f6; padding: 4px 6px; margin: 2px 0; }
.samples td { max-width: 420px; }
.badge { display: inline-block; border-radius: 3px; padding: 0 5px; margin: 1px 3px 1px 0;
  font-size: .8em; border: 1px solid #bbb; background: #fff; }
.badge.yes { background: #fde2e1; border-color: #e59a96; }
.badge.no { background: #e3f4e1; border-color: #92c78c; }
.badge.warn { background: #fff2cc; border-color: #d6b656; }
.error { color: #a40000; }
.statement { font-size: 1.1em; background: #eaf2fb; border-left: 5px solid #4c78a8;
  padding: 8px 12px; max-width: 1000px; }
.statement.finding { background: #fff2cc; border-color: #d6b656; }
.note { color: #555; font-size: .92em; }
details { margin: .5em 0; }
summary { cursor: pointer; }
"""


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body><script>{_SCRIPT}</script><main>{body}</main></body></html>\n"
    )
