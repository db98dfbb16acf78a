""" The core's internal services. """

from __future__ import annotations

import os

from zato import __version__
from zato.server.service import Service


class Ping(Service):
    """ Answers with `pong`: a cheap check that invoking services works. """
    name = "zato.ping"

    def handle(self):
        self.response.payload = {"pong": "zato"}


class GetServerInfo(Service):
    """ This worker's identity: useful to see which worker answered. """
    name = "zato.server.get-info"

    async def handle(self):
        server = self.server
        self.response.payload = {
            "name": server.name, "pid": os.getpid(), "version": __version__,
            "worker_index": server.options.worker_index, "workers": server.options.workers,
            "plugins": server.plugins.enabled_names(),
        }


class GetServiceList(Service):
    """ Every deployed service: name, internal or not, and where it comes from. """
    name = "zato.service.get-list"

    async def handle(self):
        self.response.payload = [
            {"name": e.name, "is_internal": e.internal, "module": e.module, "is_async": e.is_async}
            for e in sorted(self.server.services.entries.values(), key=lambda e: e.name)
        ]
