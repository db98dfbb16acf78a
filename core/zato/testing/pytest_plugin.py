""" pytest fixtures of the Zato test kit (loaded automatically through the `pytest11` entry point). """

from __future__ import annotations

from pathlib import Path

import pytest

from zato.testing import create_test_server_dir


@pytest.fixture
def zato_server_dir(tmp_path: Path) -> Path:
    """ A fresh quickstart server directory on port 0 (admin password: `zato.testing.ADMIN_PASSWORD`). """
    return create_test_server_dir(tmp_path / "server")


@pytest.fixture
def zato_service_tester(tmp_path: Path):
    """ A `zato.testing.ServiceTester` with no services yet: `add` yours, give outgoing
    connections canned answers with `outgoing`, then invoke. """
    from zato.testing.services import ServiceTester
    tester = ServiceTester(base_dir=tmp_path / "zato-service-tester")
    yield tester
    tester.close()


@pytest.fixture
def zato_invoke(zato_service_tester):
    """ `result = await zato_invoke(MyService, payload, http_method=..., params=...)` in async tests
    (the same tester as the `zato_service_tester` fixture). """
    return zato_service_tester.invoke


@pytest.fixture
def zato_invoke_sync(zato_service_tester):
    """ `result = zato_invoke_sync(MyService, payload, ...)` in plain (not async) tests. """
    return zato_service_tester.invoke_sync
