""" The `ftp` plugin: outgoing FTP and FTPS connections (Zato's `outconn_ftp`), reached by services
as `self.outgoing.ftp.get(name)` (also `self.out.ftp[name]`), with pyfilesystem2's FTPFS method
names on the standard library's ftplib:

    conn = self.outgoing.ftp.get("My FTP")
    for name in conn.listdir("/incoming"):              # in a plain `def handle`
        data = conn.getbytes(f"/incoming/{name}")
        conn.remove(f"/incoming/{name}")
    names = await conn.run(lambda conn: conn.listdir("/incoming"))   # in an `async def handle`

On once installed; `[deploy_internal] zato_plugin_ftp = False` (or `[component_enabled] ftp = False`) in server.conf switches it off.
See README.md for every field of a connection.
"""

from __future__ import annotations

from zato.plugin_api import Connector, Field, ObjectType, OutgoingConnectionType, ZatoSpelling, hookimpl

from zato_plugin_ftp.connection import (
    DEFAULT_POOL_SIZE, DEFAULT_PORT, DEFAULT_TIMEOUT, TLS_MODES, TLS_NONE, DestinationExists, DirectoryExists,
    FTPConnection, FTPError, Info, ResourceNotFound,
)

__all__ = ["ACCESSOR", "CONNECTION_TYPE", "DestinationExists", "DirectoryExists", "FTPConnection", "FTPError", "Info",
           "OBJECT_TYPE", "OUTGOING_FTP", "ResourceNotFound"]

OBJECT_TYPE = "outgoing_ftp"
CONNECTION_TYPE = "ftp"
ACCESSOR = "out.ftp"

OUTGOING_FTP = ObjectType(OBJECT_TYPE, (
    Field("name", required=True, description="What services look the connection up by: self.outgoing.ftp.get(name) "
                                             "(or self.out.ftp[name])"),
    Field("host", required=True, description="The FTP server's host name or IP address; may be $NAME",
          example="ftp.example.com"),
    Field("port", "int", default=DEFAULT_PORT, minimum=1, maximum=65535, description="TCP port of the control "
                                                                                     "connection; may be $NAME"),
    Field("user", description="User to log in as; empty: anonymous", example="zato"),
    Field("password", secret=True, description="Password of user; stored encrypted, never returned or logged"),
    Field("acct", description="Account (ACCT) for servers that ask for one after the password; usually empty"),
    Field("timeout", "float", default=DEFAULT_TIMEOUT, minimum=0.1,
          description="Seconds to wait for the connection and for each reply or block of data"),
    Field("dircache", "bool", default=False, description="Accepted from Zato's definitions; listings are always "
                                                         "asked of the server"),
    Field("default_directory", description="What relative paths are relative to; empty: the login directory. "
                                           "Absolute paths are the server's own", example="/incoming"),
    Field("passive", "bool", default=True, description="Passive mode (PASV/EPSV: the client opens the data "
                                                       "connections); false: active mode (PORT)"),
    Field("tls", default=TLS_NONE, choices=TLS_MODES,
          description="none: plain FTP; explicit: FTPS with AUTH TLS before the login and a protected data channel "
                      "(PROT P)", example="explicit"),
    Field("tls_verify", "bool", default=True, description="Verify the server's certificate and host name (turn off "
                                                          "for tests only)"),
    Field("tls_ca_file", description="PEM file with the CA certificate(s) to trust instead of the system's",
          example="/etc/zato/ftp-ca.pem"),
    Field("pool_size", "int", default=DEFAULT_POOL_SIZE, minimum=1, maximum=1000,
          description="Control connections kept open at most, each used by one call at a time; more calls at "
                      "once wait for a free one"),
    Field("is_active", "bool", default=True, description="Inactive connections are not built"),
), description="An outgoing FTP or FTPS connection: self.outgoing.ftp.get(name) is a file system object "
               "(listdir, getbytes, setbytes, remove, ...)",
    zato=ZatoSpelling("outconn_ftp", ignored=("id", "cluster_id")))


@hookimpl
def register_connectors(register):
    register(Connector(OUTGOING_FTP, OutgoingConnectionType(
        CONNECTION_TYPE, OBJECT_TYPE, ACCESSOR, FTPConnection,
        "FTP and FTPS (self.outgoing.ftp.get(name).listdir(path), .getbytes(path), ...)")))
