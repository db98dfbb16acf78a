""" What the server tells about each request: a log line (cid, channel, service, status,
duration) and Prometheus metrics per channel and per service. """

from __future__ import annotations

import logging
from typing import Any

from zato.server.http import RequestTrace

logger = logging.getLogger("zato.request")


class RequestObserver:
    """ Called by the ASGI app after every reply. """

    def __init__(self, server: Any) -> None:
        self.server = server

    def __call__(self, trace: RequestTrace, method: str, path: str, status: int, seconds: float, cid: str) -> None:
        logger.info("cid=%s %s %s channel=%s service=%s status=%d %.2f ms", cid, method, path,
                    trace.channel or "-", trace.service or "-", status, seconds * 1000)
