""" What service code written for Zato 3.2+ imports from `zato.common.api`: the e-mail message
class `SMTPMessage`, and the constants also found in `zato.common`.

    from zato.common.api import SMTPMessage

    message = SMTPMessage()
    message.subject = "New data"
    message.body = "Check attached data"
    message.to = "ops@example.com, Ann <ann@example.com>"   # a string (comma-separated) or a list
    message.attach("data.txt", data)                        # str or bytes; MIME type from the name
    self.email.smtp["My SMTP"].conn.send(message)

`SMTPMessage` is plain data with Zato's attribute names (`from_`, `to`, `cc`, `bcc`, `subject`,
`body`, `is_html`, `headers`, `charset`, `attachments`) plus `html_body` (an HTML alternative to
a plain-text `body`). `as_email_message()` turns it into a standard `email.message.EmailMessage`;
`recipients()` gives the envelope recipients (To, Cc and Bcc; Bcc never appears in a header).
Sending it is the job of an SMTP outgoing connection (the `smtp` plugin).
"""

from __future__ import annotations

import mimetypes
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from typing import Any, Iterable

from zato.common import CACHE, DATA_FORMAT, SERVER_STARTUP, ZATO_ERROR, ZATO_OK

__all__ = ["CACHE", "DATA_FORMAT", "SERVER_STARTUP", "SMTPMessage", "ZATO_ERROR", "ZATO_OK"]

DEFAULT_MIME_TYPE = "application/octet-stream"

# Headers the message writes from its own attributes; `headers` may replace them, except Bcc,
# which is never written (its addresses are envelope recipients only).
_OWN_HEADERS = ("from", "to", "cc", "subject")


class SMTPMessage:
    """ An e-mail message to send through an SMTP outgoing connection.

    `to`, `cc` and `bcc` are each a string of comma-separated addresses or a list of them;
    an address may carry a display name (`Ann <ann@example.com>`). `body` is plain text, or HTML
    if `is_html` is True (as in Zato); `html_body` adds an HTML alternative to a plain-text body.
    `headers` are extra headers (`Reply-To`, `X-...`). `attachments` is a list of
    `{"name", "contents", "mime_type"}` dicts, usually filled by `attach`.
    """

    def __init__(self, from_: str | None = None, to: Any = None, subject: str = "", body: str = "",
                 attachments: list[dict[str, Any]] | None = None, cc: Any = None, bcc: Any = None,
                 is_html: bool = False, headers: dict[str, str] | None = None, charset: str = "utf-8",
                 is_rfc2231: bool = True, html_body: str | None = None) -> None:
        self.from_ = from_
        self.to = to
        self.subject = subject
        self.body = body
        self.attachments: list[dict[str, Any]] = attachments if attachments is not None else []
        self.cc = cc
        self.bcc = bcc
        self.is_html = is_html
        self.headers: dict[str, str] = headers if headers is not None else {}
        self.charset = charset
        # Zato's switch for RFC 2231 file names; non-ASCII attachment names are always encoded that
        # way here, so it is kept for compatibility only.
        self.is_rfc2231 = is_rfc2231
        self.html_body = html_body

    def attach(self, name: str, data: str | bytes, mime_type: str | None = None) -> None:
        """ Adds an attachment called `name`. Text is sent as UTF-8; bytes are sent exactly as
        given. Without `mime_type` it is guessed from the name (`data.csv` -> `text/csv`),
        falling back to `application/octet-stream`. """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"an attachment needs a file name, got {name!r}")
        if not isinstance(data, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"attachment {name!r}: data must be str or bytes, not {type(data).__name__}; "
                            f"serialise it first (e.g. json.dumps)")
        if mime_type is not None:
            _split_mime_type(mime_type, name)
        self.attachments.append({"name": name, "contents": data, "mime_type": mime_type})

    # ############################################################################################

    def recipients(self) -> list[str]:
        """ Envelope recipients: every address in `to`, `cc` and `bcc`, each once, in that order. """
        seen: set[str] = set()
        out = []
        for field in ("to", "cc", "bcc"):
            for address in _addresses(getattr(self, field), field):
                if address.addr_spec.lower() not in seen:
                    seen.add(address.addr_spec.lower())
                    out.append(address.addr_spec)
        return out

    def sender(self, default: str | None = None) -> str:
        """ The envelope sender: `from_`, else `default`. """
        found = _addresses(self.from_ or default, "from_")
        if not found:
            raise ValueError("the message has no sender: set message.from_ (or the connection's default_from)")
        if len(found) > 1:
            raise ValueError(f"the message has {len(found)} senders in from_; give exactly one address")
        return found[0].addr_spec

    def as_email_message(self, default_from: str | None = None) -> EmailMessage:
        """ The message as a standard `EmailMessage`, ready for `smtplib.SMTP.send_message`.
        Raises `ValueError` or `TypeError`, naming the attribute, for what cannot be sent. """
        if not self.recipients():
            raise ValueError("the message has no recipients: set message.to (or cc, bcc)")
        message = EmailMessage()
        sender = self.sender(default_from)
        message["From"] = _addresses(self.from_ or default_from, "from_")[0]
        for field, header in (("to", "To"), ("cc", "Cc")):
            addresses = _addresses(getattr(self, field), field)
            if addresses:
                message[header] = addresses
        message["Subject"] = _header_value("subject", self.subject or "")
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])  # no DNS look-up of this host
        for name, value in (self.headers or {}).items():
            if name.lower() == "bcc":
                raise ValueError("headers: Bcc is never written into a message; use message.bcc")
            if name.lower() in _OWN_HEADERS or name.lower() in ("date", "message-id"):
                del message[name]
            message[name] = _header_value(f"headers[{name!r}]", str(value))

        charset = _charset(self.charset)
        body = self.body or ""
        if not isinstance(body, str):
            raise TypeError(f"body must be text, not {type(body).__name__}")
        if self.is_html:
            message.set_content(body, subtype="html", charset=charset)
        else:
            message.set_content(body, charset=charset)
            if self.html_body:
                message.add_alternative(self.html_body, subtype="html", charset=charset)

        for attachment in self.attachments:
            name, data, mime_type = _attachment(attachment)
            maintype, subtype = _split_mime_type(mime_type, name)
            params = {"charset": "utf-8"} if maintype == "text" and isinstance(data, str) else None
            content = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            message.add_attachment(content, maintype=maintype, subtype=subtype, filename=name, params=params)
        return message

    def __repr__(self) -> str:
        # Never the body or attachment contents: this may end up in logs.
        names = [a.get("name") for a in self.attachments if isinstance(a, dict)]
        return f"<SMTPMessage subject={self.subject!r} to={self.to!r} attachments={names!r}>"


# ################################################################################################


def _addresses(value: Any, field: str) -> list[Address]:
    """ `"a@x, Ann <b@y>"` or `["a@x", "Ann <b@y>"]` -> Address objects; refuses what is not an
    address, naming the attribute. """
    if value is None or value == "":
        return []
    if isinstance(value, str):
        items: Iterable[Any] = [value]
    elif isinstance(value, (list, tuple, set)):
        items = value
    else:
        raise TypeError(f"message.{field} must be a string or a list of strings, not {type(value).__name__}")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"message.{field}: {item!r} is not a string")
        _header_value(field, item)
        for display_name, addr_spec in getaddresses([item]):
            if not addr_spec:
                continue
            if "@" not in addr_spec:
                raise ValueError(f"message.{field}: {addr_spec!r} is not an e-mail address (user@domain)")
            try:
                out.append(Address(display_name=display_name, addr_spec=addr_spec))
            except (ValueError, IndexError) as exc:
                raise ValueError(f"message.{field}: {addr_spec!r} is not an e-mail address ({exc})") from None
    return out


def _header_value(where: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"message.{where} must be one line (a line break there could forge headers)")
    return value


def _charset(charset: str | None) -> str:
    charset = (charset or "utf-8").strip()
    return "utf-8" if charset.lower() in ("utf8", "utf-8") else charset


def _attachment(attachment: Any) -> tuple[str, Any, str]:
    """ Name, data and MIME type of one entry of `attachments` (Zato's dicts, with an optional
    `mime_type`). """
    if not isinstance(attachment, dict) or "name" not in attachment or "contents" not in attachment:
        raise ValueError(f"an attachment is {{'name': ..., 'contents': ...}} (use message.attach), got {attachment!r:.80}")
    name, data = attachment["name"], attachment["contents"]
    if not isinstance(data, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"attachment {name!r}: data must be str or bytes, not {type(data).__name__}")
    mime_type = attachment.get("mime_type") or mimetypes.guess_type(name)[0] or DEFAULT_MIME_TYPE
    return name, data, mime_type


def _split_mime_type(mime_type: str, name: str) -> tuple[str, str]:
    maintype, _, subtype = str(mime_type).partition("/")
    if not maintype or not subtype or " " in mime_type:
        raise ValueError(f"attachment {name!r}: {mime_type!r} is not a MIME type (e.g. text/csv)")
    return maintype.lower(), subtype.lower()
