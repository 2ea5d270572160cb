"""The storage conformance suite on the YAML backend (a real file per test)."""
from __future__ import annotations

import pytest

from xpresso_env.testing.storage_suite import ChangeCounterConformance, ProcessConformance


class TestYamlConformance(ChangeCounterConformance, ProcessConformance):
    @pytest.fixture
    def backend_spec(self, tmp_path):
        return {"storage": {"backend": "yaml", "path": str(tmp_path / "xpresso.yaml")}}
