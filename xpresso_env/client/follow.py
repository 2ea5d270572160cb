"""Following a build's log live: `build --follow` and `logs --follow`.

The log is read with ``GET /api/v2/images/{uuid}/logs?follow=true&offset=N``: the server streams
it until the build ends. The client counts the bytes it has, so a dropped connection (a server
restart, a proxy, a silent read timeout) is resumed with ``?offset=N``, never repeating or losing
a byte. When a stream ends the image is read: still ``building`` (the server stopped) means
follow again. A server answering 429 (too many followers) is polled with ``?offset=N`` instead.

On a terminal the log is printed line by line above a progress line (rich's Live display):
a spinner, the elapsed time and the builder's step n/m when the log shows one. Off a terminal
the log's bytes are written as they come, and nothing else goes to stdout.

The record and the polled log are read by conditional GETs (``If-None-Match``): while nothing
changed the server answers 304 with no body.
"""
from __future__ import annotations

import codecs
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, BinaryIO, Callable, Optional

import requests
from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from .errors import ClientError
from .http import Api

FINAL = ("successful", "failed", "cancelled")
# The builders' step lines: Docker's classic builder "Step 3/7 : RUN ...", buildah "STEP 3/7: RUN
# ...", BuildKit "#5 [2/4] RUN ..." (also "#5 [stage 2/4] ...").
STEP_RES = (re.compile(r"^(?:Step|STEP)\s+(\d+)/(\d+)\s*:"),
            re.compile(r"^#\d+\s+\[(?:[^\]\s]+\s+)?(\d+)/(\d+)\]"))
# The service starts each log line with its UTC time.
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z\s+")
RETRY_FOR_S = 120.0  # give up after this long without reaching the server
POLL_S = 1.0  # when the server refuses to stream (429)


def step_of(line: str) -> Optional[tuple[int, int]]:
    text = TIMESTAMP_RE.sub("", line.strip(), count=1)
    for pattern in STEP_RES:
        m = pattern.match(text)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def elapsed_text(seconds: float) -> str:
    s = max(0, int(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _created(record: dict[str, Any]) -> Optional[float]:
    try:
        return datetime.strptime(record["date_created"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=timezone.utc).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


class ProgressLine:
    """The line under the log on a terminal; re-rendered by Live several times a second."""

    def __init__(self, label: str, started: float):
        self.label = label
        self.started = started  # time.time() of the build's start
        self.step: Optional[tuple[int, int]] = None
        self.note = ""
        self.spinner = Spinner("dots", style="cyan")

    def __rich__(self) -> Spinner:
        parts = [f"building {self.label}", elapsed_text(time.time() - self.started)]
        if self.step:
            parts.append(f"step {self.step[0]}/{self.step[1]}")
        if self.note:
            parts.append(self.note)
        self.spinner.update(text=Text("  ".join(parts)))
        return self.spinner


@dataclass
class Sinks:
    """Where the followed log goes: a terminal (console + progress line) or raw bytes."""

    console: Console  # for status lines and, on a terminal, the log
    raw: Optional[BinaryIO]  # off a terminal: the log's bytes go here as they are


class Follower:
    def __init__(self, api: Api, image_id: str, sinks: Sinks, tty: bool, cancel_on_interrupt: bool,
                 ask: Callable[[str], bool], retry_for_s: float = RETRY_FOR_S):
        self.api = api
        self.image_id = image_id
        self.sinks = sinks
        self.tty = tty
        self.cancel_on_interrupt = cancel_on_interrupt
        self.ask = ask
        self.retry_for_s = retry_for_s
        self.offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._partial = ""
        self.progress: Optional[ProgressLine] = None
        self._live: Optional[Live] = None

    # -- output ---------------------------------------------------------------------------
    def _emit(self, chunk: bytes) -> None:
        self.offset += len(chunk)
        if not self.tty:
            assert self.sinks.raw is not None
            self.sinks.raw.write(chunk)
            self.sinks.raw.flush()
            return
        text = self._partial + self._decoder.decode(chunk)
        *lines, self._partial = text.split("\n")
        for line in lines:
            self._line(line)

    def _line(self, line: str) -> None:
        step = step_of(line)
        if step and self.progress is not None:
            self.progress.step = step
        self.sinks.console.print(Text(line.rstrip("\r")), soft_wrap=True)

    def _flush(self) -> None:
        if self.tty:
            rest = self._partial + self._decoder.decode(b"", final=True)
            self._partial = ""
            if rest:
                self._line(rest)

    def _note(self, text: str) -> None:
        if self.progress is not None:
            self.progress.note = text
        if not self.tty and text:
            print(text, file=sys.stderr, flush=True)

    # -- following ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Follow until the build ends; the image's final record."""
        record = self._retrying(lambda: self.api.get_fresh("images", self.image_id))
        if not self.tty:
            return self._follow(record)
        started = _created(record) or time.time()
        self.progress = ProgressLine(f"{record.get('name')}:{record.get('tag')}", min(started, time.time()))
        self._live = live = Live(self.progress, console=self.sinks.console, transient=True, refresh_per_second=8,
                    redirect_stdout=False, redirect_stderr=False)
        with live:
            try:
                return self._follow(record)
            finally:
                live.stop()

    def _follow(self, record: dict[str, Any]) -> dict[str, Any]:
        try:
            while True:
                if record.get("status") in FINAL:
                    # one last read: the log's end (a build that ended meanwhile)
                    self._retrying(self._read_rest)
                    self._flush()
                    return record
                before = self.offset
                self._retrying(self._stream)
                record = self._retrying(lambda: self.api.get_fresh("images", self.image_id))
                if record.get("status") not in FINAL and self.offset == before:
                    time.sleep(POLL_S)  # the stream ended at once (a server stopping): not a busy loop
        except KeyboardInterrupt:
            return self._interrupted()

    def _stream(self) -> None:
        try:
            for chunk in self.api.stream("images", self.image_id, "logs",
                                         params={"follow": "true", "offset": str(self.offset)}):
                if chunk:
                    self._emit(chunk)
        except ClientError as exc:
            if exc.status != 429:
                raise
            self._note("the server streams too many logs: polling")
            time.sleep(POLL_S)
            self._read_rest()

    def _read_rest(self) -> None:
        chunk = self.api.conditional("images", self.image_id, "logs", params={"offset": str(self.offset)})
        if chunk:
            self._emit(chunk)

    def _retrying(self, action: Callable[[], Any]) -> Any:
        """``action``, again after a dropped connection or an unreachable server, from the same
        offset, until it has failed for ``retry_for_s``."""
        first_failure: Optional[float] = None
        delay = 0.2
        while True:
            try:
                result = action()
                if first_failure is not None:
                    self._note("")
                return result
            except (requests.RequestException, ClientError) as exc:
                if isinstance(exc, ClientError) and not exc.connection:
                    raise
                now = time.monotonic()
                first_failure = first_failure or now
                if now - first_failure > self.retry_for_s:
                    raise ClientError(f"lost the connection to {self.api.url}; follow again with "
                                      f"`xpresso logs {self.image_id} --follow`", connection=True) from exc
                self._note(f"connection lost, resuming at byte {self.offset}")
                time.sleep(delay)
                delay = min(delay * 2, 3.0)

    def _interrupted(self) -> dict[str, Any]:
        """Ctrl-C while following: cancel the build when asked to (or when the user says so)."""
        self._flush()
        if self._live is not None:
            self._live.stop()  # the question needs the terminal's last line
        if not (self.cancel_on_interrupt or self.ask(self.image_id)):
            raise ClientError(f"stopped following; the build goes on (`xpresso logs {self.image_id} --follow`)",
                              exit_code=130)
        try:
            return self.api.call("POST", "images", self.image_id, "cancel")
        except ClientError as exc:
            if exc.status != 409:  # 409: it ended meanwhile; report how
                raise
            return self.api.get_fresh("images", self.image_id)
