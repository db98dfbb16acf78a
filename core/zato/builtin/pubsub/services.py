""" Internal services of the pub/sub plugin (`zato.builtin.pubsub`), registered by name through
`register_internal_services`. """

from __future__ import annotations

from zato.builtin.pubsub.message import PublishError
from zato.server.http import HTTPError
from zato.server.service import Service


class Publish(Service):
    """ Publishes messages to a topic or a service, under Zato's name for it, so that clients of
    the admin invoke API (zato-client) can publish: `{"topic_name": "...", "data": ...}` or
    `{"topic_name": "...", "data_list": [{"data": ...}, ...]}`, plus the options of
    `self.pubsub.publish`. Returns `{"msg_id": ...}` or `{"msg_id_list": [...]}`. """
    name = "zato.pubsub.publish.publish"

    async def handle(self):
        request = self.request.payload
        if not isinstance(request, dict) or not request.get("topic_name"):
            raise HTTPError(400, 'Error 400 Bad Request: send {"topic_name": "...", "data": ...} or '
                                 '{"topic_name": "...", "data_list": [{"data": ...}]}')
        request = dict(request)
        name = request.pop("topic_name")
        try:
            result = await self.pubsub.publish(name, **request)
        except PublishError as exc:
            raise HTTPError(400, f"Error 400 Bad Request: {exc}") from None
        self.response.payload = {"msg_id_list": result} if isinstance(result, list) else {"msg_id": result}
