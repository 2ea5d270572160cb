"""Conditional GET (issue 17): what an ETag costs the list, and what a 304 saves.

In-process, no sockets: the WSGI app `serve` runs (create_wsgi_app: the edge, the response
cache's frontend, falcon) on a fresh SQLite store with 50 harnesses in one group, called directly
for `--seconds` per case:

* `hit`: GET /api/v2/harnesses answered from the response cache (the hot path of polling clients);
* `304`: the same with `If-None-Match` naming the current ETag (answered before falcon, no body);
* `miss`: the same list with a new query string each time (`?limit=N`), read and rendered afresh,
  so its tag is hashed each time.

Run it from two checkouts to compare (the code before issue 17 has no ETag: its `304` case
answers 200):

    python benchmarks/conditional.py --seconds 3
"""
from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable
from wsgiref.util import setup_testing_defaults

from _common import backend_settings


def _call(app: Callable, path: str, query: str, headers: dict[str, str]) -> tuple[str, int]:
    seen: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "REMOTE_ADDR": "127.0.0.1"}
    setup_testing_defaults(environ)
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    body = b"".join(app(environ, lambda status, hdrs, exc=None: seen.append(status) or (lambda _: None)))
    return seen[0], len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per case")
    args = parser.parse_args()

    from xpresso_env.app import build_context, create_wsgi_app
    from xpresso_env.core.codec import to_doc
    from xpresso_env.core.models import Harness, HarnessType

    with tempfile.TemporaryDirectory() as tmp:
        settings = backend_settings(Path(tmp), "sqlite", access_log=False)
        ctx = build_context(settings, check_schema=False, images=False)
        ctx.storage.init()
        ctx.auth.add_group("g1")
        ctx.auth.add_user("u", roles={"g1": "member"})
        token = ctx.auth.issue_token("u").display
        now = datetime.now(timezone.utc)
        with ctx.storage.write() as tx:
            for i in range(50):
                tx.insert(to_doc(Harness(id=uuid.uuid4(), group="g1", name=f"harness-{i:02d}",
                                         harness=HarnessType.PYATS, path=f"/opt/pyats/{i}", site="OTT",
                                         bldg="ALL", created_by="u", date_created=now, date_modified=now)))
        app = create_wsgi_app(ctx)
        headers = {"Authorization": token, "Group": "g1"}
        status, size = _call(app, "/api/v2/harnesses", "", headers)
        # the tag, if this code has one (the cached entry keeps it)
        entry = ctx.cached.cache.get(("/api/v2/harnesses", "", token, "g1"))
        etag = getattr(entry, "etag", None)
        print(f"list of 50: {size} bytes, ETag {etag or '(none: code before issue 17)'}")
        cases = {"hit": lambda n: _call(app, "/api/v2/harnesses", "", headers),
                 "304": lambda n: _call(app, "/api/v2/harnesses", "",
                                        {**headers, "If-None-Match": etag or '"none"'}),
                 "miss": lambda n: _call(app, "/api/v2/harnesses", f"limit={1000 - n % 900}", headers)}
        for name, case in cases.items():
            n = 0
            start = time.perf_counter()
            while (elapsed := time.perf_counter() - start) < args.seconds:
                status, _ = case(n)
                n += 1
            print(f"{name:5s} {n / elapsed:9.0f} req/s  (last status {status})")
        ctx.close()


if __name__ == "__main__":
    main()
