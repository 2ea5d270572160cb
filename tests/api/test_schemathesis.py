"""Schemathesis against the in-process app: the served OpenAPI document and the server agree.

On SQLite, with the dry-run builder and a real Polaris repository, as a superuser in group g1
with harnesses, engines and images already there: every operation gets schema-valid requests
(none may be refused or answer 5xx, every answer must match the document), schema-invalid ones
(none may answer 5xx or be accepted), and a stateful run follows the links schemathesis infers
(POST a record, then GET/PATCH/DELETE it). Deterministic (derandomized, no example database).
Hypothesis runs each example's prefix again when it looks for new ones and requires the same
answers each time, so every stateful example gets a store of its own holding exactly the seeded
documents (see ``test_stateful_links``).
Schemathesis is a test requirement: without it this module fails to import, it is never skipped.
"""
from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import World, make_settings
from tests.git_repo import hello_polaris
from xpresso_env.admin.transfer import export_file, import_file
from xpresso_env.app import AppContext, build_context, create_app
from xpresso_env.builds.files import ImagePaths
from xpresso_env.builds.idempotency import KEY_RE as IDEMPOTENCY_KEY_RE
from xpresso_env.builds.idempotency import MAX_LENGTH as MAX_KEY_LENGTH
from xpresso_env.config import Settings
from xpresso_env.core import wire
from xpresso_env.core.models import Image, ImageStatus

pytestmark = pytest.mark.slow  # hypothesis-generated requests against every operation

POSITIVE_CHECKS = [not_a_server_error, positive_data_acceptance, status_code_conformance, content_type_conformance,
                   response_schema_conformance, response_headers_conformance]
NEGATIVE_CHECKS = [not_a_server_error, negative_data_rejection]
GROUPS = ("g1", "g2")  # the groups the seeded superuser may share an image with
# A superuser in an existing group: a schema-valid request can only miss a record (404) or
# clash with one (409); 401, 403 and 5xx would be the server refusing what the document allows.
ACCEPTED = ["2xx", "404", "409"]
# A sign-in succeeds for a right password only (else 401, then 429), a password change for the right
# old password, a sign-out for a session token only (the configured token is an API token): their
# schema-valid cases are refused by design.
CREDENTIAL_OPERATIONS = ("POST /api/v2/auth/login", "POST /api/v2/auth/logout", "POST /api/v2/me/password")


def _settings(max_examples: int, **extra: Any) -> settings:
    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                    phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck), **extra)


@pytest.fixture
def backend() -> str:
    return "sqlite"


class CurrentApp:
    """The WSGI app the schema is bound to: it passes each request to the app in use, which the
    stateful test switches to each example's own app."""

    def __init__(self, app: Callable) -> None:
        self._app = app

    def use(self, app: Callable) -> None:
        self._app = app

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        return self._app(environ, start_response)


@dataclass
class Target:
    world: World
    settings: Settings  # the world's
    app: CurrentApp
    schema: Any  # schemathesis' OpenAPI schema, bound to ``app``
    path_values: dict[str, dict[str, str]]  # operation label -> path parameters of seeded records
    statuses: dict[str, set[int]] = field(default_factory=dict)  # operation label -> answers seen
    cases: int = 0

    def record(self, label: str, status: int) -> None:
        self.statuses.setdefault(label, set()).add(status)
        self.cases += 1


def wait_builds_ended(ctx: AppContext) -> None:
    """Until no image in the app's store is building."""
    deadline = time.monotonic() + 30
    while True:
        with ctx.storage.read() as tx:
            building = [d.id for d in tx.query(Image.KIND) if d.body.get("status") == ImageStatus.BUILDING.value]
        if not building:
            return
        assert time.monotonic() < deadline, f"builds did not end: {building}"
        time.sleep(0.02)


@pytest.fixture
def target(make_world, tmp_path: Path) -> Target:
    repo = hello_polaris(tmp_path / "polaris")
    s = make_settings(tmp_path, "sqlite", extra={"polaris": {"repo": str(repo.path)},
                                                 "builder": {"backend": "dry-run"}})
    world = make_world(images=True, settings_override=s, poll_s=0.1)
    world.ctx.start()

    def made(path: str, body: dict) -> str:
        r = world.post(path, body)
        assert r.status_code in (200, 201), r.text
        return r.json.get("id") or r.json["uuid"]

    harness = made("/api/v2/harnesses", {"name": "seeded-h", "path": "/p", "site": "OTT"})
    doomed_harness = made("/api/v2/harnesses", {"name": "doomed-h", "path": "/p"})
    engine = made("/api/v2/engines", {"name": "seeded-e", "base_url": "https://jenkins.example.com"})
    doomed_engine = made("/api/v2/engines", {"name": "doomed-e", "base_url": "http://[::1]:8080/"})
    image = made("/api/v2/images/polaris_build", {"name": "seeded", "tag": "v1", "git_ref": "main"})
    doomed_image = made("/api/v2/images/polaris_build", {"name": "doomed", "tag": "v1", "git_ref": "main"})
    wait_builds_ended(world.ctx)

    config = schemathesis.Config.from_dict({
        "headers": {"Authorization": world.tokens["admin"], "Group": "g1"},
        # The token also as the jwt scheme's credentials: in the stateful run, an operation with an
        # optional header parameter (Idempotency-Key) sends the configured headers in a way the
        # ignored_auth check takes for generated auth ("API accepts invalid authentication").
        "auth": {"openapi": {"jwt": {"api_key": world.tokens["admin"]}}},
        "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}},
    })
    app = CurrentApp(create_app(world.ctx))
    schema = schemathesis.openapi.from_wsgi("/api/v2/openapi.json", app, config=config)
    lookup = {"category": "harnesses", "name": "seeded-h"}
    path_values = {
        "GET /api/v2/harnesses/{id}": {"id": harness}, "PATCH /api/v2/harnesses/{id}": {"id": harness},
        "DELETE /api/v2/harnesses/{id}": {"id": doomed_harness}, "GET /api/v1/harnesses/{uuid}": {"uuid": harness},
        "GET /api/v2/engines/{id}": {"id": engine}, "PATCH /api/v2/engines/{id}": {"id": engine},
        "DELETE /api/v2/engines/{id}": {"id": doomed_engine}, "GET /api/v1/engines/{uuid}": {"uuid": engine},
        "GET /api/v2/images/{uuid}": {"uuid": image}, "PATCH /api/v2/images/{uuid}": {"uuid": image},
        "DELETE /api/v2/images/{uuid}": {"uuid": doomed_image}, "GET /api/v2/images/{uuid}/logs": {"uuid": image},
        "POST /api/v2/images/{uuid}/cancel": {"uuid": image},
        **{f"GET /api/{v}/{spelling}/{{category}}/{{name}}": lookup
           for v in ("v1", "v2") for spelling in ("resouces", "resources")},
    }
    return Target(world, s, app, schema, path_values)


def existing_groups_only(case: Any) -> Any:
    """`groups` must name groups that exist and the caller is in: data the document cannot state
    (like a record id), so each well-formed generated name becomes a seeded group. A list with a
    malformed name (a negative case) is left as it is."""
    groups = case.body.get("groups") if isinstance(case.body, dict) else None
    if isinstance(groups, list) and all(isinstance(g, str) and wire.ACCOUNT_NAME.matches(g) for g in groups):
        case.body["groups"] = [GROUPS[len(g) % len(GROUPS)] for g in groups]
    return case


def keep_the_callers_token(case: Any, token: str) -> Any:
    """A stateful run may follow GET /me/tokens to DELETE /me/tokens/{jti} of the very token it
    runs with; revoking it answers 204 and makes every later call a 401 by design. That one jti
    becomes an unknown one (a 404: still a schema-valid answer)."""
    import jwt

    if case.operation.label == "DELETE /api/v2/me/tokens/{jti}" and case.path_parameters:
        own = jwt.decode(token.split()[-1], options={"verify_signature": False}).get("jti")
        if case.path_parameters.get("jti") == own:
            case.path_parameters["jti"] = "0" * 32
    return case


_KEY_NUMBERS = itertools.count(1)


def unique_idempotency_keys(case: Any) -> Any:
    """A well-formed Idempotency-Key is made unique to its case: one key sent twice with two
    bodies is refused (422) for what an earlier case sent, which no document can state. The
    generated key's characters are kept (and a malformed one is left as it is)."""
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and IDEMPOTENCY_KEY_RE.fullmatch(key):
        suffix = f"~{next(_KEY_NUMBERS)}"
        headers["Idempotency-Key"] = key[:MAX_KEY_LENGTH - len(suffix)] + suffix
    return case


def _run_each_operation(target: Target, mode: Any, checks: list, examples: int) -> dict[str, str]:
    failures: dict[str, str] = {}
    for result in target.schema.get_all_operations():
        operation = result.ok()
        label = operation.label
        # Authorization and Group are fixed by the config's headers: not input a case can get wrong
        # (GET /api/v2/me takes nothing else).
        has_input = any(p.name not in ("Authorization", "Group") for p in operation.iter_parameters()) \
            or bool(operation.body)
        if mode == schemathesis.GenerationMode.NEGATIVE and not has_input:
            continue  # nothing to get wrong (the document, plugins, health)
        if mode == schemathesis.GenerationMode.POSITIVE and label in CREDENTIAL_OPERATIONS:
            continue  # what they accept is credentials no document states: tests/api/test_signin.py
        strategy = operation.as_strategy(mode)
        if label in target.path_values and mode == schemathesis.GenerationMode.POSITIVE:
            # Half the cases address a record that exists, so changes and reads get past the 404.
            strategy = st.one_of(operation.as_strategy(mode, path_parameters=target.path_values[label]), strategy)
        strategy = strategy.map(existing_groups_only).map(unique_idempotency_keys)

        @_settings(examples)
        @given(case=strategy)
        def run(case: Any) -> None:
            response = case.call()
            target.record(label, response.status_code)
            case.validate_response(response, checks=checks)

        try:
            run()
        except Exception as exc:  # every operation is tried; all failures are reported together
            failures[label] = str(exc)[:3000]
    return failures


def _report(failures: dict[str, str]) -> str:
    return "\n\n".join(f"== {label}\n{text}" for label, text in failures.items())


def test_schema_valid_requests_are_accepted_and_answered_as_documented(target: Target):
    failures = _run_each_operation(target, schemathesis.GenerationMode.POSITIVE, POSITIVE_CHECKS, 12)
    assert not failures, _report(failures)
    assert target.cases >= 250
    # The seeded records were reached: every operation on a record got past the 404 at least once
    # (cancel of the finished seeded build answers 409; the others 2xx).
    missed = [label for label in target.path_values if target.statuses[label] <= {404}]
    assert missed == [], target.statuses


def test_schema_invalid_requests_are_refused_without_a_5xx(target: Target):
    failures = _run_each_operation(target, schemathesis.GenerationMode.NEGATIVE, NEGATIVE_CHECKS, 6)
    assert not failures, _report(failures)
    assert target.cases >= 120
    assert all(s < 500 for statuses in target.statuses.values() for s in statuses), target.statuses


def _ids_in_creation_order() -> Callable[[], uuid.UUID]:
    """Record ids (UUID4-shaped) that grow with each record made: the same ones in every example,
    and a list ordered by (created, id) comes out in creation order even when two records share a
    creation time."""
    numbers = itertools.count(1)
    return lambda: uuid.UUID(int=next(numbers), version=4)


class ExampleStores:
    """A new started app for each stateful example, on a new store holding the seeded documents
    (and their build logs).

    Hypothesis replays an example's start to extend it and fails with FlakyStrategyDefinition
    when the replay answers differently (which links become usable depends on the status codes).
    On one shared store it did: names an earlier example took answered 409 instead of 201, and
    its seeded records could be changed or deleted. Build timing did too (a cancel finding its
    build running, 200, or ended, 409) and whether a followed log ever ended, so each step lets
    the builds it submitted end before the next one."""

    def __init__(self, seeded: AppContext, settings: Settings, folder: Path) -> None:
        self._pm = seeded.pm
        self._settings = settings
        self._folder = folder
        self._documents = folder / "seeded.yaml"
        export_file(seeded.storage, self._documents, seeded.clock, ImagePaths.from_settings(settings),
                    with_deliveries=True)
        self._numbers = itertools.count(1)

    def new(self) -> AppContext:
        path = self._folder / f"example-{next(self._numbers)}.sqlite3"
        s = replace(self._settings, storage=replace(self._settings.storage, path=str(path)))
        ctx = build_context(s, pm=self._pm, check_schema=False, new_id=_ids_in_creation_order(), poll_s=0.1)
        ctx.storage.init()
        import_file(ctx.storage, self._documents, ImagePaths.from_settings(s))
        ctx.start()
        return ctx


def test_stateful_links(target: Target, tmp_path: Path):
    stores = ExampleStores(target.world.ctx, target.settings, tmp_path)
    base: Callable = target.schema.as_state_machine()

    class Machine(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            self.ctx = stores.new()
            target.app.use(create_app(self.ctx))

        def teardown(self) -> None:
            self.ctx.close()
            super().teardown()

        def before_call(self, case: Any) -> None:
            existing_groups_only(case)
            keep_the_callers_token(case, target.world.tokens["admin"])

        def after_call(self, response: Any, case: Any) -> None:
            target.record(case.operation.label, response.status_code)
            wait_builds_ended(self.ctx)

    Machine.run(settings=_settings(40, stateful_step_count=8))
    assert target.cases >= 100
    # Links were followed: a record created in the run was read back by its id.
    assert 200 in target.statuses.get("GET /api/v2/harnesses/{id}", set()) | target.statuses.get(
        "GET /api/v2/engines/{id}", set()), target.statuses
