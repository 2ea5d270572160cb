"""A batch of hostile requests at every mounted route: none may produce a 5xx."""
from __future__ import annotations

import itertools
import re

import falcon.inspect

from xpresso_env.app import create_app

PATH_VALUES = ["94f03015-5f0d-4c2e-a6e6-49ca71442a36", "..", "%2e%2e%2f", "x" * 3000, "%00", "' OR '1'='1",
               "harnesses", "engines", "-", "\u00e9"]
BODIES = [None, b"", b"{", b"[]", b"null", b"\"str\"", b"1e999", b'{"name": {"$gt": ""}}', b'{"name": "a", "path": "/p"}',
          b'{"name": "../../etc", "tag": "../x", "git_ref": "--upload-pack=touch /tmp/pwned"}',
          b'{"pin_version": "yes"}', b"\xff\xfe\xfd", b'{"a":' * 3000, b'{"groups": [1, null, {}]}',
          b'{"name": "\\ud800", "path": "/\\udfff", "tag": "t", "git_ref": "\\ud800", "groups": ["\\ud800"]}',
          b'{"\\ud800": "\\ud800", "site": "\\udc00", "pin_version": true}']
HEADER_SETS = [
    {},
    {"Authorization": "Jwt"},
    {"Authorization": "Jwt ..."},
    {"Authorization": "Basic YWRtaW46YWRtaW4="},
    {"Authorization": "{admin}", "Group": "g1"},
    {"Content-Type": "application/xml"},
    {"Group": "\u00e9\u00e9", "Content-Type": "application/json; charset=utf-16"},
]
QUERIES = ["", "limit=-1", "offset=abc&limit=1e3", "follow=maybe", "deleted=", "%zz=1", "name[]=x", "offset=99999999999999999999"]


def _routes(app):
    for route in falcon.inspect.inspect_routes(app):
        methods = [m.method for m in route.methods if not m.internal]
        yield route.path, methods + ["PUT"]


def _fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def test_no_route_answers_5xx(make_world):
    world = make_world(images=True)  # every route, the image ones included
    app = create_app(world.ctx)
    assert any("images" in path for path, _ in _routes(app))
    tokens = [None, world.tokens["admin"], world.tokens["guest"], world.tokens["mem"]]
    seen = 0
    for path, methods in _routes(app):
        for method, value, body, headers, query, token in zip(
                itertools.cycle(methods), itertools.cycle(PATH_VALUES), itertools.cycle(BODIES),
                itertools.cycle(HEADER_SETS), itertools.cycle(QUERIES), itertools.cycle(tokens + [None]),
        ):
            h = dict(headers)
            if token and "Authorization" not in h:
                h["Authorization"] = token
                h.setdefault("Group", "g1")
            r = world.client.simulate_request(method, _fill(path, value), body=body, headers=h, query_string=query)
            assert r.status_code < 500, (method, path, value, body, headers, query, r.text)
            if r.status_code >= 400 and r.status_code != 405:
                assert "detail" in r.json or all(isinstance(v, list) for v in r.json.values()), r.text
            seen += 1
            if seen % 60 == 0:
                break
    assert seen >= 60
