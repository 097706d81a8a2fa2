"""A small client of the Chrome DevTools Protocol over ``--remote-debugging-pipe``, for tests that
use the dashboard as a person would: real mouse clicks, typed text, modal dialogs.

Chromium reads commands from its file descriptor 3 and writes answers and events to 4, each one
JSON message ended by a NUL byte. No library is needed, and no port is opened.
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import subprocess
import time
from typing import Any

DEFAULT_TIMEOUT = 30.0  # seconds an answer (or a condition in the page) may take


class BrowserError(AssertionError):
    """Chromium answered with an error, died, or a condition in the page never came true."""


class Browser:
    """One headless Chromium with one page, driven through its pipe."""

    def __init__(self, chromium: str, profile: str, *flags: str, window: tuple[int, int] = (1280, 900)) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Above 10 first, so that putting them at 3 and 4 cannot overwrite one with the other.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome_r, from_chrome_w)]

        def pipes_at_3_and_4() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self._log_path = os.path.join(profile, "chromium.log")
        self._log = open(self._log_path, "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}", "--remote-debugging-pipe",
             *flags, "about:blank"],
            pass_fds=(3, 4), preexec_fn=pipes_at_3_and_4,  # noqa: PLW1509 - two dup2 calls only
            stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, cwd=profile,
        )
        for fd in (to_chrome_r, from_chrome_w, *high):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable", session=True)
        self.send("Runtime.enable", session=True)

    # --- the protocol ---------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 16)
                if not chunk:
                    raise BrowserError(f"Chromium exited: {self._stderr()}")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(message))

    def send(self, method: str, *, session: bool = False, timeout: float = DEFAULT_TIMEOUT, **params: Any) -> Any:
        """Run one command; its result (BrowserError for an error answer). Events are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def _stderr(self) -> str:
        with open(self._log_path, "rb") as log:
            return log.read().decode(errors="replace")[-2000:]

    # --- a person's actions ---------------------------------------------------------------------
    def open(self, url: str) -> None:
        """Go to ``url`` and wait for the page's load event."""
        self.events.clear()
        self.send("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + DEFAULT_TIMEOUT
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read_message(deadline))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = self.send("Runtime.evaluate", session=True, expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, condition: str, what: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Wait until the JavaScript ``condition`` is truthy in the page; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(condition)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {what} ({condition})")
            time.sleep(0.1)

    def click(self, selector: str) -> None:
        """A real left click in the middle of the first element ``selector`` matches."""
        box = self.wait(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            f" e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();"
            f" return r.width && r.height ? [r.left + r.width / 2, r.top + r.height / 2] : null; }})()",
            f"{selector} to be shown",
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", session=True, type=kind, x=box[0], y=box[1], button="left",
                      clickCount=1)

    def type_into(self, selector: str, text: str) -> None:
        """Focus an input, clear it, and type ``text`` as keystrokes would insert it."""
        self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                      f" e.focus(); e.select && e.select(); return true; }})()")
        self.send("Input.dispatchKeyEvent", session=True, type="keyDown", key="Backspace", code="Backspace",
                  windowsVirtualKeyCode=8)
        self.send("Input.dispatchKeyEvent", session=True, type="keyUp", key="Backspace", code="Backspace",
                  windowsVirtualKeyCode=8)
        if text:
            self.send("Input.insertText", session=True, text=text)

    def text(self, selector: str) -> str:
        return str(self.evaluate(f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent || ''"))

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                try:
                    self.send("Browser.close", timeout=5)
                except BrowserError:
                    pass
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        finally:
            for fd in (self._to_chrome, self._from_chrome):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._log.close()
