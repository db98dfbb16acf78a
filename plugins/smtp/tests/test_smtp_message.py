""" `zato.common.api.SMTPMessage`, the message services build: how it becomes a standard
`EmailMessage` (headers, parts, attachments), its envelope recipients, and the errors for what
cannot be sent. What a real server receives is tested in test_smtp_connection.py. """

from __future__ import annotations

import email
import email.policy

import pytest

from zato.common.api import DATA_FORMAT, SERVER_STARTUP, SMTPMessage


def parsed(message: SMTPMessage, default_from: str | None = None) -> email.message.EmailMessage:
    """ The message as a server would read it: built, serialised, parsed back. """
    data = message.as_email_message(default_from).as_bytes()
    return email.message_from_bytes(data, policy=email.policy.default)


def test_zato_constants_are_importable_from_zato_common_api_too():
    assert DATA_FORMAT.JSON == "json" and SERVER_STARTUP.PHASE.AFTER_STARTED == "AFTER_STARTED"


def test_zato_attributes_and_constructor_arguments():
    message = SMTPMessage("me@example.com", "a@example.com", "Subject", "Body", cc="c@example.com",
                          bcc=["b@example.com"], is_html=False, headers={"X-Id": "1"}, charset="utf8")
    assert (message.from_, message.to, message.subject, message.body) == ("me@example.com", "a@example.com",
                                                                          "Subject", "Body")
    assert message.attachments == [] and message.is_rfc2231
    message.attach("data.txt", "x")
    assert message.attachments == [{"name": "data.txt", "contents": "x", "mime_type": None}]


def test_headers_parts_and_bcc_only_in_the_envelope():
    message = SMTPMessage()
    message.from_ = "Zato <zato@example.com>"
    message.to = "ann@example.com, Bob Żak <bob@example.com>"
    message.cc = ["carol@example.com"]
    message.bcc = "dave@example.com, ann@example.com"
    message.subject = "Nowe dane: żółw"
    message.body = "Check attached data"
    message.html_body = "<p>Check <b>attached</b> data</p>"
    message.headers = {"Reply-To": "ops@example.com"}
    got = parsed(message)
    assert got["From"] == "Zato <zato@example.com>"
    assert got["To"] == "ann@example.com, Bob Żak <bob@example.com>"
    assert got["Cc"] == "carol@example.com" and got["Reply-To"] == "ops@example.com"
    assert got["Subject"] == "Nowe dane: żółw"
    assert "Bcc" not in got and "dave@example.com" not in message.as_email_message().as_string()
    assert got["Message-ID"].endswith("@example.com>") and got["Date"]
    assert got.get_body(("plain",)).get_content() == "Check attached data\n"
    assert got.get_body(("html",)).get_content() == "<p>Check <b>attached</b> data</p>\n"
    assert message.recipients() == ["ann@example.com", "bob@example.com", "carol@example.com", "dave@example.com"]


def test_is_html_makes_the_body_html_as_in_zato():
    got = parsed(SMTPMessage(from_="z@example.com", to="a@example.com", body="<h1>Hi</h1>", is_html=True))
    assert got.get_content_type() == "text/html" and got.get_content() == "<h1>Hi</h1>\n"
    assert got.get_body(("plain",)) is None


def test_attachments_keep_their_bytes_names_and_mime_types():
    binary = bytes(range(256)) * 4
    message = SMTPMessage(from_="z@example.com", to="a@example.com", subject="s", body="b")
    message.attach("data.txt", "zażółć gęślą jaźń\n")
    message.attach("report.csv", b"a,b\n1,2\n")
    message.attach("blob", binary)
    message.attach("dane-ł.bin", binary, mime_type="application/x-custom")
    attachments = list(parsed(message).iter_attachments())
    assert [a.get_filename() for a in attachments] == ["data.txt", "report.csv", "blob", "dane-ł.bin"]
    assert [a.get_content_type() for a in attachments] == ["text/plain", "text/csv", "application/octet-stream",
                                                           "application/x-custom"]
    assert attachments[0].get_payload(decode=True) == "zażółć gęślą jaźń\n".encode("utf-8")
    assert attachments[0].get_content_charset() == "utf-8"
    assert attachments[1].get_payload(decode=True) == b"a,b\n1,2\n"
    assert attachments[2].get_payload(decode=True) == binary
    assert attachments[3].get_payload(decode=True) == binary


def test_zato_style_attachment_dicts_are_accepted():
    message = SMTPMessage(from_="z@example.com", to="a@example.com")
    message.attachments.append({"name": "legacy.json", "contents": '{"a": 1}'})
    (attachment,) = parsed(message).iter_attachments()
    assert attachment.get_content_type() == "application/json" and attachment.get_payload(decode=True) == b'{"a": 1}'


def test_the_sender_comes_from_the_message_or_the_default():
    message = SMTPMessage(to="a@example.com")
    assert parsed(message, "Default <default@example.com>")["From"] == "Default <default@example.com>"
    assert message.sender("default@example.com") == "default@example.com"
    message.from_ = "own@example.com"
    assert message.sender("default@example.com") == "own@example.com"


@pytest.mark.parametrize(("changes", "error"), [
    ({"to": ""}, "no recipients: set message.to"),
    ({"to": None, "cc": [], "bcc": ""}, "no recipients"),
    ({"to": "not-an-address"}, "message.to: 'not-an-address' is not an e-mail address"),
    ({"cc": "a@example.com, nobody"}, "message.cc: 'nobody' is not an e-mail address"),
    ({"to": 42}, "message.to must be a string or a list of strings, not int"),
    ({"bcc": [None]}, "message.bcc: None is not a string"),
    ({"from_": None}, "no sender: set message.from_"),
    ({"from_": "a@example.com, b@example.com"}, "2 senders"),
    ({"subject": "hi\r\nBcc: victim@example.com"}, "message.subject must be one line"),
    ({"to": "a@example.com\nBcc: victim@example.com"}, "message.to must be one line"),
    ({"headers": {"Bcc": "x@example.com"}}, "use message.bcc"),
    ({"body": b"bytes"}, "body must be text"),
    ({"attachments": [("name", "data")]}, "an attachment is {'name': ..., 'contents': ...}"),
])
def test_what_cannot_be_sent_is_refused_naming_the_attribute(changes, error):
    message = SMTPMessage(from_="z@example.com", to="a@example.com", subject="s", body="b")
    for name, value in changes.items():
        setattr(message, name, value)
    with pytest.raises((TypeError, ValueError), match=error.replace("(", r"\(").replace("{", r"\{")):
        message.as_email_message()


def test_attach_refuses_what_it_cannot_send():
    message = SMTPMessage()
    with pytest.raises(TypeError, match="attachment 'x.json': data must be str or bytes, not dict; serialise it"):
        message.attach("x.json", {"a": 1})
    with pytest.raises(ValueError, match="needs a file name"):
        message.attach("", b"x")
    with pytest.raises(ValueError, match="'text' is not a MIME type"):
        message.attach("x", b"x", mime_type="text")
    assert message.attachments == []


def test_repr_shows_no_body_or_attachment_data():
    message = SMTPMessage(to="a@example.com", subject="s", body="secret body")
    message.attach("a.txt", "secret contents")
    text = repr(message)
    assert "a.txt" in text and "secret" not in text
