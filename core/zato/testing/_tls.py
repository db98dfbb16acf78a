""" Test certificates: a private CA and a server certificate it signed for `localhost` and
`127.0.0.1`, plus a second CA that signed nothing, so that a test can show both a verified TLS
connection and one refused because the peer is not trusted. One way to make them for every test
peer (SMTP, FTPS, Redis over TLS, the Dropbox stand-in...), in core tests, plugins' and users'. """

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TestCertificates:
    ca_file: Path           # the private CA's certificate: what a client trusts (tls_ca_file)
    cert_file: Path         # the server's certificate (localhost, 127.0.0.1), signed by the CA
    key_file: Path          # the server's private key, 0600
    other_ca_file: Path     # a CA that did not sign the server's certificate

    __test__ = False        # not a pytest test class, despite its name

    def server_context(self) -> ssl.SSLContext:
        """ An SSL context for a test server presenting the certificate. """
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """ An SSL context for a client that trusts the private CA only. """
        return ssl.create_default_context(cafile=str(self.ca_file))


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder: Any, days: int) -> Any:
    now = datetime.datetime.now(datetime.timezone.utc)
    return builder.not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=days))


def _make_ca(common_name: str) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
               .public_key(key.public_key()).serial_number(x509.random_serial_number()))
    cert = (_validity(builder, 30)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_test_certificates(directory: Path, ca_name: str = "Zato test CA") -> TestCertificates:
    """ Writes ca.pem, server.pem, server.key (0600) and other-ca.pem into `directory` (created
    if missing) and returns their paths. """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _make_ca(ca_name)
    _, other_ca_cert = _make_ca("Some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number()))
    cert = (_validity(builder, 30)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = TestCertificates(directory / "ca.pem", directory / "server.pem", directory / "server.key",
                             directory / "other-ca.pem")
    paths.ca_file.write_bytes(ca_cert.public_bytes(pem))
    paths.other_ca_file.write_bytes(other_ca_cert.public_bytes(pem))
    paths.cert_file.write_bytes(cert.public_bytes(pem))
    fd = os.open(paths.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths
