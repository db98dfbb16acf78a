""" Zato's broker message codes (`zato.common.broker_message`), for service code written for Zato.

Zato's servers tell each other about changes through a broker, each message carrying an
`action`: a code such as `SERVICE.PUBLISH.value`. Here the same messages travel through the
notification transport between a server's workers (`self.broker_client`, docs/services.md);
the codes are Zato's own, so code that compares or logs them reads the same:

    from zato.common.broker_message import SERVICE

    msg = {'action': SERVICE.PUBLISH.value, 'service': 'my.service', 'payload': ''}
    self.broker_client.publish(msg)     # runs my.service in every worker of the server

Only the group whose messages service code sends is defined (SERVICE, numbered as in Zato);
`code_to_name` maps each code to its name (`'101802'` -> `'SERVICE_PUBLISH'`).
"""

from __future__ import annotations

__all__ = ["SERVICE", "ValueConstant", "code_to_name"]


class ValueConstant:
    """ One message code: `.value` is the code (a string of digits), `.name` its name. """
    __slots__ = ("name", "value")

    def __init__(self) -> None:
        self.name = ""
        self.value = ""

    def __repr__(self) -> str:
        return f"<ValueConstant {self.name}={self.value}>"


class _Constants:
    """ A group of codes numbered from `code_start` in definition order, as Zato numbers them. """
    code_start = 0

    def __init_subclass__(cls) -> None:
        constants = [(name, value) for name, value in vars(cls).items() if isinstance(value, ValueConstant)]
        for index, (name, constant) in enumerate(constants):
            constant.name = name
            constant.value = str(cls.code_start + index)
        cls._constants = tuple(constant for _, constant in constants)

    @classmethod
    def values(cls) -> tuple[ValueConstant, ...]:
        return cls._constants

    @classmethod
    def items(cls) -> list[tuple[str, ValueConstant]]:
        return [(constant.name, constant) for constant in cls._constants]


class SERVICE(_Constants):
    code_start = 101800

    EDIT = ValueConstant()
    DELETE = ValueConstant()
    PUBLISH = ValueConstant()  # run a service in every worker (self.broker_client.publish)


code_to_name: dict[str, str] = {
    constant.value: f"{group.__name__}_{constant.name}" for group in (SERVICE,) for constant in group.values()}
