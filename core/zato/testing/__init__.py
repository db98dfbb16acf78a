""" The core's test kit: start servers in-process or as real processes (`ExternalProcess` for any
other program a test or benchmark needs), for the core's tests,
plugins' tests and users' own tests, and run services without a server (`ServiceTester`, with
canned answers for outgoing connections; see docs/testing-services.md), and make test certificates
(`make_test_certificates`: a private CA and a server certificate for TLS peers). Its fixtures are a pytest plugin (`zato.testing.pytest_plugin`),
registered by the `pytest11` entry point, so installing zato-core makes them available.
"""

from zato.testing._asgi import handle_lifespan, serve_asgi, text_app
from zato.testing._process import ExternalProcess, ProcessExited, process_tree
from zato.testing._servers import (
    ADMIN_PASSWORD, ServerProcess, admin_auth, create_test_server_dir, run_server, set_config_value,
)
from zato.testing._tls import TestCertificates, make_test_certificates

# The service test kit imports the server; it is loaded on first use, so that loading this
# package (pytest loads it at every start through the `pytest11` entry point) stays cheap.
_SERVICE_KIT = ("CannedHTTP", "CannedResponse", "CannedSMTP", "HTTPCall", "ServiceResult", "ServiceTester",
                "UnknownService")


def __getattr__(name: str):
    if name in _SERVICE_KIT:
        from zato.testing import services
        return getattr(services, name)
    raise AttributeError(f"module 'zato.testing' has no attribute {name!r}")


__all__ = ["handle_lifespan", "serve_asgi", "text_app", "ExternalProcess", "ProcessExited", "process_tree", "ADMIN_PASSWORD", "ServerProcess", "admin_auth", "create_test_server_dir", "run_server", "set_config_value",
           "TestCertificates", "make_test_certificates",
           "CannedHTTP", "CannedResponse", "CannedSMTP", "HTTPCall", "ServiceResult", "ServiceTester", "UnknownService"]
