""" IBM MQ for Zato services: channels that take messages off queues and invoke services
(`channel_ibm_mq`), outgoing connections that put messages on queues (`outgoing_ibm_mq`), both
on connection definitions (`definition_ibm_mq`). """
