""" Deploying services (from modules and from files) and finding them by name.

A `ServiceEntry` may exist before its module is imported: the start-up cache restores entries
by name, and the module is imported when the service is first invoked.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zato.server.service import Service


class ServiceNotFound(LookupError):
    """ No service of that name is deployed. """

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no such service: {name!r}")


class DeploymentError(Exception):
    """ A service module could not be deployed; the message says which file and why. """


@dataclass
class ServiceEntry:
    name: str
    module: str
    class_name: str
    file: str
    internal: bool
    is_async: bool = False
    cls: type[Service] | None = None
    # Known once the class is imported (attach):
    sio: Any = field(default=None, repr=False)  # compiled SimpleIO, or None
    verbs: dict[str, tuple[str, bool]] = field(default_factory=dict, repr=False)  # GET -> ("handle_GET", is_async)

    CACHED = ("name", "module", "class_name", "file", "internal", "is_async")

    def to_cache(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.CACHED}

    def attach(self, cls: type[Service]) -> "ServiceEntry":
        """ Binds the imported class and compiles what is known about it once. """
        from zato.server.service.simpleio import compile_sio
        self.cls = cls
        self.is_async = _is_async_service(cls)
        self.sio = compile_sio(cls)
        self.verbs = {attr[7:]: (attr, inspect.iscoroutinefunction(getattr(cls, attr)))
                      for attr in dir(cls) if attr.startswith("handle_") and attr[7:].isupper()}
        return self


def _dashed(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower().replace("_", "-")


def service_name(cls: type[Service], module_name: str) -> str:
    """ A service's name: its `name` attribute, or `module.class-name` as Zato derives it. """
    explicit = cls.__dict__.get("name")
    if explicit:
        return explicit
    return f"{module_name}.{_dashed(cls.__name__)}"


def _is_async_service(cls: type[Service]) -> bool:
    return inspect.iscoroutinefunction(getattr(cls, "handle", None))


class ServiceStore:
    """ Every deployed service by name. """

    def __init__(self) -> None:
        self.entries: dict[str, ServiceEntry] = {}
        self._import_lock = threading.Lock()

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def add_entries(self, entries: list[ServiceEntry]) -> None:
        for entry in entries:
            self._check_duplicate(entry)
        for entry in entries:
            self.entries[entry.name] = entry

    def _check_duplicate(self, entry: ServiceEntry) -> None:
        other = self.entries.get(entry.name)
        if other is not None and (other.module, other.class_name) != (entry.module, entry.class_name):
            raise DeploymentError(
                f"service name {entry.name!r} is used twice: by {other.class_name} in {other.file} and by "
                f"{entry.class_name} in {entry.file}; rename one of them (set its `name` attribute)")

    def deploy_module(self, module_name: str, *, internal: bool) -> list[ServiceEntry]:
        """ Imports a module and deploys each Service subclass defined in it. """
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise DeploymentError(f"cannot import service module {module_name}: {type(exc).__name__}: {exc}") from exc
        entries = self.entries_of(module, internal=internal)
        self.add_entries(entries)
        return entries

    def deploy_file(self, path: Path) -> list[ServiceEntry]:
        """ Imports a user's .py file and deploys its services. """
        path = Path(path).resolve()
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
        module_name = f"zato_user_services.{path.stem}_{digest}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise DeploymentError(f"{path}: not a Python module")
        module = importlib.util.module_from_spec(spec)
        module.__zato_service_module__ = path.stem  # type: ignore[attr-defined]
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            raise DeploymentError(f"{path}:{exc.lineno}: syntax error: {exc.msg}; the file was not deployed") from None
        except Exception as exc:
            line = _error_line(exc, path)
            raise DeploymentError(f"{path}{line}: {type(exc).__name__}: {exc}; the file was not deployed") from None
        sys.modules[module_name] = module
        entries = self.entries_of(module, internal=False)
        self.add_entries(entries)
        return entries

    @staticmethod
    def entries_of(module: Any, *, internal: bool) -> list[ServiceEntry]:
        public_name = getattr(module, "__zato_service_module__", module.__name__)
        file = getattr(module, "__file__", "") or ""
        entries = []
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not issubclass(cls, Service) or cls is Service:
                continue
            if cls.__name__.startswith("_") and not cls.__dict__.get("name"):
                continue  # private helpers are not services unless they name themselves
            entries.append(ServiceEntry(service_name(cls, public_name), module.__name__, cls.__name__, file,
                                        internal).attach(cls))
        return entries

    def get(self, name: str) -> ServiceEntry:
        try:
            entry = self.entries[name]
        except KeyError:
            raise ServiceNotFound(name) from None
        if entry.cls is None:
            with self._import_lock:
                if entry.cls is None:
                    module = importlib.import_module(entry.module)
                    entry.attach(getattr(module, entry.class_name))
        return entry


def _error_line(exc: BaseException, path: Path) -> str:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f":{line}" if line else ""
