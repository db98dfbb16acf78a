""" What a channel service sees as `self.request.ibm_mq`: one message taken off a queue. """

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Any

# Coded character set IDs of MQ messages, as Python codecs
_CCSID_CODECS = {1208: "utf-8", 819: "latin-1", 367: "ascii", 437: "cp437", 850: "cp850", 1200: "utf-16-be",
                 1252: "cp1252", 37: "cp037", 500: "cp500", 1140: "cp1140", 1047: "cp1047"}


def text_of(data: bytes, ccsid: int) -> str | bytes:
    """ The message's data as text in its character set; bytes when it is not text in it. """
    codec = _CCSID_CODECS.get(ccsid, "utf-8")
    try:
        codecs.lookup(codec)
        return data.decode(codec)
    except (LookupError, UnicodeDecodeError):
        return data


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1").rstrip(" \x00")
    return str(value or "").rstrip()


@dataclass
class IBMMQMessage:
    """ `self.request.ibm_mq` in a service a `channel_ibm_mq` invokes, as in Zato:

    * `data` - the message's data: text in its character set (CodedCharSetId), or bytes
    * `msg_id`, `correlation_id` - MsgId and CorrelId, 24 bytes each
    * `mqmd` - the whole message descriptor (`mqmd.PutApplName`, `mqmd.BackoutCount`, every field)
    * `reply_to` - ReplyToQ (empty if none), `reply_to_qmgr` - ReplyToQMgr
    * `put_date` - PutDate, 'YYYYMMDD'; `put_time` - PutTime, 'HHMMSSTH' (GMT, as MQ keeps them)
    * `queue` - the queue it was taken off; `backout_count` - how often it was backed out before
    """
    data: str | bytes
    msg_id: bytes
    correlation_id: bytes
    mqmd: Any
    reply_to: str
    reply_to_qmgr: str
    put_date: str
    put_time: str
    queue: str
    backout_count: int

    @classmethod
    def of(cls, data: bytes, md: Any, queue: str) -> "IBMMQMessage":
        return cls(text_of(data, int(md.CodedCharSetId)), bytes(md.MsgId), bytes(md.CorrelId), md, _text(md.ReplyToQ),
                   _text(md.ReplyToQMgr), _text(md.PutDate), _text(md.PutTime), queue, int(md.BackoutCount))

    def __repr__(self) -> str:
        data = self.data if len(self.data) <= 60 else self.data[:60]
        return f"<IBMMQMessage msg_id={self.msg_id.hex()} queue={self.queue!r} data={data!r}>"
