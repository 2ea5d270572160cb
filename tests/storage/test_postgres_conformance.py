"""The storage conformance suite on the PostgreSQL backend, against the real server.

One temporary database per module; each test starts from an empty, not initialised schema
(the xpresso tables are dropped before it), which is much faster than a database per test.
"""
from __future__ import annotations

import pytest

from xpresso_env.testing import require
from xpresso_env.testing.postgres import drop_tables, postgres_available, temp_database
from xpresso_env.testing.storage_suite import ChangeCounterConformance, ChangeNoticeConformance, ProcessConformance


@pytest.fixture(scope="module")
def pg_dsn():
    require(postgres_available(), "PostgreSQL is not reachable (set XPRESSO_TEST_PG_ADMIN_DSN)")
    with temp_database() as dsn:
        yield dsn


class TestPostgresConformance(ChangeCounterConformance, ChangeNoticeConformance, ProcessConformance):
    @pytest.fixture
    def backend_spec(self, pg_dsn):
        drop_tables(pg_dsn)
        return {"storage": {"backend": "postgres", "dsn": pg_dsn, "pool_max": 8, "busy_timeout_s": 10.0}}
