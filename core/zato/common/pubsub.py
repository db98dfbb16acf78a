""" `from zato.common.pubsub import PubSubMessage`, as service code written for Zato imports it. """

from zato.builtin.pubsub_message import PubSubMessage

__all__ = ["PubSubMessage"]
