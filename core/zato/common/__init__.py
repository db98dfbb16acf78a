""" Constants that service and start-up code written for Zato imports from `zato.common`. """

from __future__ import annotations


class _Namespace:
    """ A read-only group of constants, iterable in definition order. """

    def __init_subclass__(cls) -> None:
        cls._values = tuple(v for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, str))

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return cls._values


class SERVER_STARTUP:
    class PHASE(_Namespace):
        """ Start-up phases, in the order a server goes through them (docs/startup.md). """
        FS_CONFIG_ONLY = "FS_CONFIG_ONLY"
        IMPL_BEFORE_RUN = "IMPL_BEFORE_RUN"
        ON_STARTING = "ON_STARTING"
        BEFORE_POST_FORK = "BEFORE_POST_FORK"
        AFTER_POST_FORK = "AFTER_POST_FORK"
        IN_PROCESS_FIRST = "IN_PROCESS_FIRST"
        IN_PROCESS_OTHER = "IN_PROCESS_OTHER"
        AFTER_STARTED = "AFTER_STARTED"


class CACHE:
    class TYPE(_Namespace):
        BUILTIN = "builtin"


class DATA_FORMAT(_Namespace):
    JSON = "json"
    TEXT = "text"
    FORM = "form"


ZATO_OK = "ZATO_OK"
ZATO_ERROR = "ZATO_ERROR"
