"""Storage-free routes never wait behind storage ones (``http.lanes``), and the start-up gate."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

from xpresso_env.http.lanes import LaneDispatcher, StartupGate, storage_free


@dataclass
class Request:
    path: str
    command: str = "GET"


@dataclass
class Task:
    """Stands in for waitress's channel: its waiting requests, and service() run by a thread."""
    path: str
    release: threading.Event
    served: threading.Event = field(default_factory=threading.Event)

    @property
    def requests(self) -> list[Request]:
        return [Request(self.path)]

    def service(self) -> None:
        self.served.set()
        self.release.wait(10)

    def cancel(self) -> None:  # waitress's shutdown cancels what is still queued
        pass


def test_storage_free_routes():
    for path in ("/", "/api/v2/openapi.json", "/metrics", "/ui/app.js"):
        assert storage_free(path), path
    for path in ("/api/v2/harnesses", "/api/v2/health", "/ui", "/metricsx", "/api/v2/openapi.jsonx"):
        assert not storage_free(path), path


def test_storage_free_requests_are_served_while_every_main_thread_is_held():
    lanes = LaneDispatcher(free_threads=2)
    lanes.set_thread_count(3)
    hold = threading.Event()
    try:
        stuck = [Task("/api/v2/harnesses", hold) for _ in range(6)]  # more than the threads
        for task in stuck:
            lanes.add_task(task)
        assert all(t.served.wait(5) for t in stuck[:3])
        free = [Task(path, threading.Event()) for path in ("/api/v2/openapi.json", "/", "/metrics", "/ui/app.css")]
        for task in free:
            task.release.set()
            lanes.add_task(task)
        assert all(t.served.wait(5) for t in free)
        assert not any(t.served.is_set() for t in stuck[3:])  # these still wait for a main thread
    finally:
        hold.set()
        lanes.shutdown(timeout=5)


def test_startup_gate_answers_503_until_open():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]

    gate = StartupGate(app)
    answers = []

    def call(path):
        body = b"".join(gate({"PATH_INFO": path}, lambda status, headers: answers.append((status, dict(headers)))))
        return answers[-1][0], answers[-1][1], body

    status, headers, body = call("/api/v2/harnesses")
    assert status.startswith("503") and headers["Content-Type"] == "application/json"
    assert "not reachable" in json.loads(body)["detail"]
    assert call("/api/v2/openapi.json")[2] == b"app"  # needs no storage: answered meanwhile
    gate.open()
    assert call("/api/v2/harnesses")[2] == b"app"
