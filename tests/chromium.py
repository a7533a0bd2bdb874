"""Open an HTML file in headless Chromium and report what a user's browser would show: console
errors, uncaught exceptions, CSP violations, failed loads, the report's own image-load counters
and a full-page screenshot.

It speaks the DevTools protocol over ``--remote-debugging-pipe`` (NUL-terminated JSON on fds 3/4)
with the standard library only: no websocket client, no selenium, and no grepping of Chromium's
log format, which changes between versions. Used by tests/test_report_html.py; as a script it takes
screenshots::

    python -m tests.chromium report.html shot.png
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--mute-audio",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
]  # fmt: skip


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@dataclass
class PageCheck:
    dataset: dict[str, str]  # document.body.dataset after the load event
    errors: list[str] = field(default_factory=list)  # console/log errors and uncaught exceptions
    screenshot: bytes | None = None  # PNG


class _Pipe:
    """A DevTools-protocol client over the two pipes of --remote-debugging-pipe."""

    def __init__(self, write_fd: int, read_fd: int, timeout: float) -> None:
        self.write_fd, self.read_fd, self.deadline = write_fd, read_fd, time.monotonic() + timeout
        self.buffer, self.next_id = b"", 0
        self.events: list[dict[str, Any]] = []

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.read_fd], [], [], remaining)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                raise ConnectionError("chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> Any:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str) -> None:
        while not any(e["method"] == method for e in self.events):
            self.events.append(self._message())


def _errors(events: list[dict[str, Any]]) -> list[str]:
    """Everything DevTools would show in red: uncaught exceptions, console.error/assert, and log
    entries of level error (CSP violations, failed resource loads, network errors)."""
    found = []
    for event in events:
        params = event.get("params", {})
        if event["method"] == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            found.append(
                "exception: " + str(details.get("exception", {}).get("description") or details)
            )
        elif event["method"] == "Runtime.consoleAPICalled" and params.get("type") in (
            "error",
            "assert",
        ):
            args = " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            found.append(f"console.{params['type']}: {args}")
        elif event["method"] == "Log.entryAdded" and params["entry"].get("level") == "error":
            found.append(f"log ({params['entry'].get('source')}): {params['entry'].get('text')}")
    return found


def check_page(
    html_path: Path, chromium: str, *, screenshot: bool = False, width: int = 1280,
    timeout: float = 60.0, dataset_wait: float = 3.0,
) -> PageCheck:  # fmt: skip
    """Load ``html_path`` (file://) and collect errors, body dataset and optionally a screenshot.

    ``dataset_wait``: how long to wait after the load event for the page's script to fill
    ``document.body.dataset.imagesTotal`` (0 for pages without that script)."""
    cmd_read, cmd_write = os.pipe()  # we write commands, chromium reads them on fd 3
    res_read, res_write = os.pipe()  # chromium writes replies on fd 4, we read them
    # Move chromium's ends above fd 10 so the dup2 onto 3 and 4 below cannot clobber one another.
    child_in = fcntl.fcntl(cmd_read, fcntl.F_DUPFD_CLOEXEC, 10)
    child_out = fcntl.fcntl(res_write, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(cmd_read)
    os.close(res_write)

    def wire_fds() -> None:  # runs in the child; dup2 clears close-on-exec on 3 and 4
        os.dup2(child_in, 3)
        os.dup2(child_out, 4)

    with tempfile.TemporaryDirectory(prefix="rk-chromium-") as profile:
        process = subprocess.Popen(
            [chromium, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
             f"--window-size={width},900", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire_fds, close_fds=False,
        )  # fmt: skip
        os.close(child_in)
        os.close(child_out)
        pipe = _Pipe(cmd_write, res_read, timeout)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log"):
                pipe.call(f"{domain}.enable", session=session)
            pipe.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                session,
            )
            pipe.events.clear()  # only what the report itself causes counts
            pipe.call("Page.navigate", {"url": html_path.resolve().as_uri()}, session)
            pipe.wait_for("Page.loadEventFired")
            # The report's inline script fills body.dataset on load; poll until it has.
            wait = (
                "new Promise(r=>{const f=()=>document.body&&document.body.dataset.imagesTotal!=="
                "undefined?r(JSON.stringify(document.body.dataset)):setTimeout(f,20);"
                f"setTimeout(()=>r(JSON.stringify(document.body?document.body.dataset:{{}})),"
                f"{int(dataset_wait * 1000)});"
                "f();})"
            )
            value = pipe.call(
                "Runtime.evaluate",
                {"expression": wait, "awaitPromise": True, "returnByValue": True},
                session,
            )["result"]["value"]
            check = PageCheck(dataset=json.loads(value))
            if screenshot:
                size = pipe.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
                clip = {"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1}
                shot = pipe.call(
                    "Page.captureScreenshot",
                    {"format": "png", "clip": clip, "captureBeyondViewport": True},
                    session,
                )
                check.screenshot = base64.b64decode(shot["data"])
            check.errors = _errors(pipe.events)
            try:
                pipe.call("Browser.close")
            except (ConnectionError, TimeoutError):
                pass
            return check
        finally:
            os.close(cmd_write)
            os.close(res_read)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":
    browser = find_chromium()
    if browser is None:
        sys.exit("chromium not found")
    result = check_page(Path(sys.argv[1]), browser, screenshot=len(sys.argv) > 2)
    if result.screenshot and len(sys.argv) > 2:
        Path(sys.argv[2]).write_bytes(result.screenshot)
    print(json.dumps({"dataset": result.dataset, "errors": result.errors}, indent=2))
