""" Exceptions that code written for Zato imports from `zato.common.exception`. """

from __future__ import annotations


class ZatoException(Exception):
    """ Zato's base exception: a message and the cid of the invocation it belongs to. """

    def __init__(self, cid: str | None = None, msg: str | None = None) -> None:
        super().__init__(msg)
        self.cid = cid
        self.msg = msg

    def __repr__(self) -> str:
        return f"<{type(self).__name__} cid:{self.cid!r} msg:{self.msg!r}>"

    def __str__(self) -> str:
        return self.msg or ""


class ClientHTTPError(ZatoException):
    """ Raised by a service to answer the caller with an HTTP error status. """
    status = 400

    def __init__(self, cid: str | None = None, msg: str | None = None, status: int | None = None) -> None:
        super().__init__(cid, msg)
        if status is not None:
            self.status = status


class BadRequest(ClientHTTPError):
    status = 400


class Unauthorized(ClientHTTPError):
    status = 401


class Forbidden(ClientHTTPError):
    status = 403


class NotFound(ClientHTTPError):
    status = 404


class Conflict(ClientHTTPError):
    status = 409


class TooManyRequests(ClientHTTPError):
    status = 429
