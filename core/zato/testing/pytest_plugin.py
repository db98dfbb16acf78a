""" pytest fixtures of the Zato test kit (loaded automatically through the `pytest11` entry point). """

from __future__ import annotations

from pathlib import Path

import pytest

from zato.testing import create_test_server_dir


@pytest.fixture
def zato_server_dir(tmp_path: Path) -> Path:
    """ A fresh quickstart server directory on port 0 (admin password: `zato.testing.ADMIN_PASSWORD`). """
    return create_test_server_dir(tmp_path / "server")
