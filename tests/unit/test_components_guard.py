"""Under CI=true a missing component or import fails the test; elsewhere it skips
with the install hint. Optional tools (no registry ships them) skip everywhere."""

from __future__ import annotations

import pytest

from rtp.local_servers import ComponentMissing
from tests.helpers import components


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_a_missing_import_or_component_fails(monkeypatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"CI must run this test.*pip install it"):
        components.require_import("no_such_module_for_the_guard", "pip install it")
    failed = pytest.raises(pytest.fail.Exception, match="redis-server not found")
    with failed, components.component():
        raise ComponentMissing("redis-server not found: apt-get install redis-server")


def test_elsewhere_it_skips_with_the_install_hint(monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="is missing: apt-get install x"):
        components.require_binary("no-such-binary-for-the-guard", "apt-get install x")


def test_an_optional_tool_skips_under_ci_too(monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.skip.Exception, match="optional tool no-such-tool"):
        components.optional_tool("no-such-tool", "not packaged")
