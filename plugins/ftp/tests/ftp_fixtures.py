""" Fixtures for the ftp plugin's tests: the test kit's FTP server (zato_plugin_ftp.testing), plain
and FTPS, and the certificates FTPS uses. """

from __future__ import annotations

import pytest

from zato.plugin_api import TestCertificates, make_test_certificates
from zato_plugin_ftp.testing import PASSWORD, USER, FTPPeer

__all__ = ["FTPPeer", "PASSWORD", "USER", "ftp_certificates", "ftp_peer", "ftps_peer"]


@pytest.fixture(scope="session")
def ftp_certificates(tmp_path_factory) -> TestCertificates:
    return make_test_certificates(tmp_path_factory.mktemp("ftp-certificates"), "Zato FTP test CA")


@pytest.fixture
def ftp_peer(tmp_path):
    with FTPPeer(tmp_path / "ftp-home") as peer:
        yield peer


@pytest.fixture
def ftps_peer(tmp_path, ftp_certificates):
    with FTPPeer(tmp_path / "ftps-home", certificates=ftp_certificates) as peer:
        yield peer
