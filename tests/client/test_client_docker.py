"""The `xpresso` client following real Docker builds (the private dockerd of
tests/daemon_fixtures.py, busybox base image loaded): the progress line on a terminal (a real
pty: elapsed time and Docker's `Step n/m`), Ctrl-C with --cancel-on-interrupt (a real SIGINT
to the client process), and a followed log resumed after its connection is cut mid-build."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
from rich.spinner import Spinner

from tests.client.conftest import CLIENT, Site, start_site
from tests.client.test_client import CuttableProxy


@pytest.fixture(scope="module")
def docker_site(tmp_path_factory, docker_url: str, docker_busybox: str) -> Iterator[Site]:
    yield from start_site(tmp_path_factory.mktemp("client-docker"),
                          {"backend": "docker", "docker": {"base_url": docker_url}})


def _sigint_default() -> None:
    """In the client's process before exec: SIGINT as a terminal would deliver it. A shell without
    job control starts background jobs with SIGINT ignored, and an ignored SIGINT stays ignored
    across exec (Python then installs no KeyboardInterrupt): these tests must not depend on how
    the test run itself was started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _read_until(fd: int, proc: subprocess.Popen, needle: re.Pattern, timeout_s: float = 120) -> bytes:
    """What the pty shows until ``needle`` matches it (or the process ends)."""
    out = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            out += chunk
            if needle.search(out):
                return out
        elif proc.poll() is not None:
            break
    return out


def test_follow_on_a_terminal_shows_elapsed_time_and_docker_steps(docker_site: Site, tmp_path: Path):
    main, secondary = pty.openpty()
    env = docker_site.client_env(XPRESSO_URL=docker_site.url, XPRESSO_TOKEN=docker_site.tokens["alice"],
                                 XPRESSO_GROUP="g1", TERM="xterm-256color", COLUMNS="120")
    proc = subprocess.Popen([*CLIENT, "build", "cli-steps:v1", "--ref", "steps", "--follow"], stdin=secondary,
                            stdout=secondary, stderr=secondary, env=env, start_new_session=True)
    os.close(secondary)
    try:
        # The progress line while step 3/3 (the RUN that sleeps) runs: spinner, elapsed m:ss, step.
        shown = _read_until(main, proc, re.compile(rb"building cli-steps:v1  \d+:\d\d  step 3/3"))
        text = shown.decode(errors="replace")
        assert re.search(r"building cli-steps:v1  \d+:\d\d  step 3/3", text), text
        # ... led by a spinner (rich's "dots" frames)
        frames = "".join(Spinner("dots").frames)  # the follower's spinner
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # without the terminal's colour codes
        assert re.search(f"[{re.escape(frames)}] building cli-steps:v1", plain), text
        assert "Step 1/3 : FROM" in text  # the log's own lines, above the progress line
        rest = _read_until(main, proc, re.compile(rb"cli-steps:v1 successful"))
        assert proc.wait(60) == 0, (text + rest.decode(errors="replace"))[-2000:]
        assert "cli-steps:v1 successful" in rest.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)


def test_ctrl_c_on_a_terminal_asks_whether_to_cancel(docker_site: Site):
    main, secondary = pty.openpty()
    env = docker_site.client_env(XPRESSO_URL=docker_site.url, XPRESSO_TOKEN=docker_site.tokens["alice"],
                                 XPRESSO_GROUP="g1", TERM="xterm-256color", COLUMNS="120")
    proc = subprocess.Popen([*CLIENT, "build", "cli-ask:v1", "--ref", "sleepy", "--follow"], stdin=secondary,
                            stdout=secondary, stderr=secondary, env=env, start_new_session=True,
                            preexec_fn=_sigint_default)
    os.close(secondary)
    try:
        shown = _read_until(main, proc, re.compile(rb"sleeping now"))
        assert b"sleeping now" in shown, shown[-2000:]
        proc.send_signal(signal.SIGINT)
        shown += _read_until(main, proc, re.compile(rb"Cancel build [0-9a-f-]{36}\?"))
        assert re.search(rb"Cancel build [0-9a-f-]{36}\?", shown), shown[-2000:]
        os.write(main, b"y\r")
        shown += _read_until(main, proc, re.compile(rb"cli-ask:v1 cancelled"))
        assert proc.wait(60) == 1, shown[-2000:].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    text = shown.decode(errors="replace")
    image_id = re.search(r"as ([0-9a-f-]{36})", text).group(1)
    assert "cli-ask:v1 cancelled" in text and "Traceback" not in text
    assert docker_site.image(image_id)["status"] == "cancelled"


def test_ctrl_c_with_cancel_on_interrupt_cancels_the_build(docker_site: Site):
    proc = subprocess.Popen([*CLIENT, "build", "cli-sleepy:v1", "--ref", "sleepy", "--follow",
                             "--cancel-on-interrupt"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            preexec_fn=_sigint_default,
                            env=docker_site.client_env(XPRESSO_URL=docker_site.url,
                                                       XPRESSO_TOKEN=docker_site.tokens["alice"], XPRESSO_GROUP="g1"))
    try:
        # Not a terminal: the log's lines come as they are; wait for the sleeping RUN to start.
        seen = b""
        deadline = time.monotonic() + 120
        while b"sleeping now" not in seen:
            line = proc.stdout.readline()
            assert line, f"the client ended early: {proc.stderr.read()!r}"
            seen += line
            assert time.monotonic() < deadline
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    err_text = err.decode()
    image_id = re.search(r"as ([0-9a-f-]{36})", err_text).group(1)
    assert "cli-sleepy:v1 cancelled" in err_text
    assert "Traceback" not in err_text
    assert docker_site.image(image_id)["status"] == "cancelled"


def test_ctrl_c_without_the_flag_and_no_terminal_leaves_the_build_running(docker_site: Site):
    r = docker_site.xpresso("build", "cli-left:v1", "--ref", "sleepy", "--json", env={})
    image_id = json.loads(r.stdout)["uuid"]
    proc = subprocess.Popen([*CLIENT, "logs", image_id, "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, preexec_fn=_sigint_default,
                            env=docker_site.client_env(XPRESSO_URL=docker_site.url,
                                                       XPRESSO_TOKEN=docker_site.tokens["alice"], XPRESSO_GROUP="g1"))
    try:
        seen = b""
        while b"sleeping now" not in seen:
            line = proc.stdout.readline()
            assert line, f"the client ended early: {proc.stderr.read()!r}"
            seen += line
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert f"xpresso logs {image_id} --follow" in err.decode()
    assert docker_site.image(image_id)["status"] == "building"
    assert docker_site.xpresso("cancel", image_id).returncode == 0
    assert docker_site.wait(image_id)["status"] == "cancelled"


def test_follow_resumes_a_live_build_after_the_connection_is_cut(docker_site: Site):
    """The cut lands in the streamed answer while the build runs (its first lines are out, the
    RUN still sleeps); the client follows again from its offset, and prints the log once."""
    proxy = CuttableProxy(docker_site.server.port, cut_after=250)
    try:
        r = docker_site.xpresso("build", "cli-cut:v1", "--ref", "steps", "--follow",
                                env={"XPRESSO_URL": f"http://127.0.0.1:{proxy.port}"})
    finally:
        proxy.close()
    assert proxy.cuts == 1
    assert r.returncode == 0, r.stderr
    image_id = re.search(r"as ([0-9a-f-]{36})", r.stderr).group(1)
    assert r.stdout == docker_site.log(image_id)
    assert "Step 3/3 : RUN" in r.stdout
    assert "connection lost, resuming at byte" in r.stderr
