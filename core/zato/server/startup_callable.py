""" User start-up callables (`[misc] startup_callable` in server.conf) and the context they get. """

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

logger = logging.getLogger("zato.startup")


class StartupError(Exception):
    """ Start-up cannot go on; the message names what failed and what to do. """


@dataclass
class PhaseCtx:
    """ What each start-up callable is given: the phase and its arguments. """
    phase: str
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def import_callable(dotted_name: str, where: str = "[misc] startup_callable") -> Callable[[PhaseCtx], Any]:
    """ `package.module.name` -> the object; a clear StartupError if it cannot be had. """
    module_name, _, attr = dotted_name.strip().rpartition(".")
    if not module_name:
        raise StartupError(f"{where}: {dotted_name!r} is not a dotted name like `my_module.my_function`")
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:  # a module that calls sys.exit() at import is an error like any other
        raise StartupError(
            f"{where}: cannot import module {module_name!r} for {dotted_name!r}: {type(exc).__name__}: {exc}; "
            f"check the name and that the module is on PYTHONPATH (the server directory's `lib` folder is)") from exc
    try:
        func = getattr(module, attr)
    except AttributeError:
        raise StartupError(f"{where}: module {module_name!r} has no {attr!r} (for {dotted_name!r})") from None
    if not callable(func):
        raise StartupError(f"{where}: {dotted_name!r} is not callable")
    return func


def load_startup_callables(names: Any) -> list[tuple[str, Callable[[PhaseCtx], Any]]]:
    if not names:
        return []
    if isinstance(names, str):
        names = [n for n in (part.strip() for part in names.split(",")) if n]
    return [(name, import_callable(name)) for name in names]


def run_user_callables(callables: list[tuple[str, Callable[[PhaseCtx], Any]]], ctx: PhaseCtx) -> None:
    """ Calls each user callable with `ctx`, in order. Runs in a worker thread (callables may block). """
    for name, func in callables:
        try:
            func(ctx)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: user code cannot stop the server on its own
            raise StartupError(
                f"start-up callable {name} raised in phase {ctx.phase}: {type(exc).__name__}: {exc}; "
                f"fix it or remove it from [misc] startup_callable in server.conf") from exc
