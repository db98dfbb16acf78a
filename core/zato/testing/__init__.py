""" The core's test kit: start servers in-process or as real processes, for the core's tests,
plugins' tests and users' own tests. Its fixtures are a pytest plugin (`zato.testing.pytest_plugin`),
registered by the `pytest11` entry point, so installing zato-core makes them available.
"""

from zato.testing._servers import (
    ADMIN_PASSWORD, ServerProcess, admin_auth, create_test_server_dir, run_server, set_config_value,
)

__all__ = ["ADMIN_PASSWORD", "ServerProcess", "admin_auth", "create_test_server_dir", "run_server", "set_config_value"]
