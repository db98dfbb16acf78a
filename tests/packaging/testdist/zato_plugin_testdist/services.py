""" The testdist plugin's internal service. """

from __future__ import annotations

from zato.server.service import Service


class Hello(Service):
    """ Answers with a greeting naming this plugin and echoing `name` from the request. """
    name = "testdist.hello"

    def handle(self):
        self.response.payload = {"hello": self.request.input.get("name") or "world", "plugin": "testdist"}
