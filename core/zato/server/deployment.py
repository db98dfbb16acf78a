""" Deploying services (from modules and from files) and finding them by name.

A `ServiceEntry` may exist before its module is imported: the start-up cache restores entries
by name, and the module is imported when the service is first invoked.

A user's file is deployed in two steps, so that a broken version never replaces a working one:
`load_file` imports it into a fresh module (a name never used before in this process) without
touching what is deployed, and `commit_file` swaps the file's services in all at once (a new
dict replaces the old one, so a lookup sees either every old service of the file or every new
one). Requests in flight keep the class they started with.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from zato.server.service import Service

logger = logging.getLogger(__name__)


class ServiceNotFound(LookupError):
    """ No service of that name is deployed. """

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no such service: {name!r}")


class DeploymentError(Exception):
    """ A service module could not be deployed; the message says which file and why. `file` and
    `line` say where, when known (`line` is None for errors not tied to a line). """

    def __init__(self, message: str, *, file: str = "", line: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line


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


@dataclass
class LoadedFile:
    """ A user's file imported into a fresh module, not deployed yet (`ServiceStore.load_file`). """
    path: str  # absolute, symbolic links not resolved: the file's name in its directory matters
    digest: str  # sha256 of the source that was run
    module: ModuleType
    entries: list[ServiceEntry]


@dataclass(frozen=True)
class DeployedFile:
    """ What a user's file deployed: its services and the version of its source. """
    path: str
    digest: str
    module: str
    names: tuple[str, ...]


_issued_module_names: set[str] = set()
_module_names_lock = threading.Lock()


def _new_module_name(path: Path) -> str:
    """ `zato_user_services.<stem>_<path digest>` the first time a file is loaded in this process,
    then `..._v2`, `..._v3`: each version of a file is its own module, never reusing a name. """
    base = f"zato_user_services.{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    with _module_names_lock:
        name, version = base, 1
        while name in _issued_module_names or name in sys.modules:
            version += 1
            name = f"{base}_v{version}"
        _issued_module_names.add(name)
    return name


class ServiceStore:
    """ Every deployed service by name. """

    def __init__(self) -> None:
        self.entries: dict[str, ServiceEntry] = {}
        self.files: dict[str, DeployedFile] = {}  # absolute path -> what a user's file deployed
        self.file_errors: dict[str, DeploymentError] = {}  # absolute path -> why deploy_file failed
        self._import_lock = threading.Lock()
        # The plugins loaded in this server (set at start): a user's file that uses what another
        # plugin provides (self.outgoing.ftp without the ftp plugin) is deployed with a warning
        self.enabled_plugins: frozenset[str] | None = None

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
        except BaseException as exc:
            raise DeploymentError(f"cannot import service module {module_name}: {type(exc).__name__}: {exc}") from exc
        entries = self.entries_of(module, internal=internal)
        self.add_entries(entries)
        return entries

    def deploy_file(self, path: Path) -> list[ServiceEntry]:
        """ Imports a user's .py file and deploys its services (replacing those a previous version
        of the same file deployed). A failure is raised and remembered in `file_errors`. """
        key = _file_key(path)
        try:
            loaded = self.load_file(path)
            self.commit_file(loaded)
        except DeploymentError as exc:
            self.file_errors[key] = exc
            raise
        return loaded.entries

    def load_file(self, path: Path | str, source: bytes | None = None) -> LoadedFile:
        """ Imports a user's file into a new module, without deploying anything: what is deployed
        stays as it is, whatever happens. `source` is the file's content if already read (it is
        run as if it were at `path`, so errors and tracebacks name `path`). Raises
        `DeploymentError` with the file and line of a syntax or import error. """
        path = Path(_file_key(path))
        if source is None:
            try:
                source = path.read_bytes()
            except OSError as exc:
                raise DeploymentError(f"{path}: cannot read the file ({exc.strerror}); the file was not deployed",
                                      file=str(path)) from None
        module_name = _new_module_name(path)
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise DeploymentError(f"{path}: not a Python module", file=str(path))
        try:
            code = compile(source, str(path), "exec", dont_inherit=True)
        except SyntaxError as exc:
            raise DeploymentError(f"{path}:{exc.lineno}: syntax error: {exc.msg}; the file was not deployed",
                                  file=str(path), line=exc.lineno) from None
        except ValueError as exc:  # e.g. null bytes in the source
            raise DeploymentError(f"{path}: not Python source: {exc}; the file was not deployed", file=str(path)) from None
        module = importlib.util.module_from_spec(spec)
        module.__zato_service_module__ = path.stem  # type: ignore[attr-defined]
        sys.modules[module_name] = module  # as an import does: code run at import may look itself up
        try:
            exec(code, module.__dict__)
            entries = self.entries_of(module, internal=False)
        except BaseException as exc:  # KeyboardInterrupt and SystemExit at import reject the file too
            sys.modules.pop(module_name, None)
            line = _error_line(exc, path)
            raise DeploymentError(f"{path}{f':{line}' if line else ''}: {type(exc).__name__}: {exc}; the file was not "
                                  f"deployed", file=str(path), line=line) from None
        self._warn_about_missing_plugins(path, source)
        return LoadedFile(str(path), hashlib.sha256(source).hexdigest(), module, entries)

    def _warn_about_missing_plugins(self, path: Path, source: bytes) -> None:
        """ One warning per loaded file that uses a connector whose plugin is not loaded here. """
        if self.enabled_plugins is None:
            return
        from zato.plugins import unavailable_service_uses
        problems = unavailable_service_uses(source.decode("utf-8", "replace"), self.enabled_plugins)
        if problems:
            logger.warning("%s is deployed, but its services will fail where they use what this server does not "
                           "have: %s", path, "; ".join(problems))

    def check_file(self, loaded: LoadedFile) -> None:
        """ Raises `DeploymentError` if committing `loaded` would give a service name to two
        classes (in this file, or in this file and another file or internal module). """
        previous = self.files.get(loaded.path)
        own = set(previous.names) if previous else set()
        seen: dict[str, ServiceEntry] = {}
        for entry in loaded.entries:
            other = seen.get(entry.name) or (self.entries.get(entry.name) if entry.name not in own else None)
            if other is not None:
                raise DeploymentError(
                    f"service name {entry.name!r} is used twice: by {other.class_name} in {other.file} and by "
                    f"{entry.class_name} in {entry.file}; rename one of them (set its `name` attribute); the file "
                    f"was not deployed", file=loaded.path)
            seen[entry.name] = entry

    def commit_file(self, loaded: LoadedFile) -> tuple[list[str], list[str]]:
        """ Deploys a loaded file in one step: its services replace those its previous version
        deployed, and services the new version no longer has are undeployed. Returns (deployed
        names, undeployed names). Raises `DeploymentError` on a name clash, changing nothing. """
        try:
            self.check_file(loaded)
        except DeploymentError:
            self.discard(loaded)
            raise
        previous = self.files.get(loaded.path)
        old_names = set(previous.names) if previous else set()
        new = {entry.name: entry for entry in loaded.entries}
        entries = dict(self.entries)
        for name in old_names - new.keys():
            entries.pop(name, None)
        entries.update(new)
        self.entries = entries  # one assignment: lookups see the old services or the new ones
        self.files[loaded.path] = DeployedFile(loaded.path, loaded.digest, loaded.module.__name__, tuple(sorted(new)))
        self.file_errors.pop(loaded.path, None)
        if previous is not None and previous.module != loaded.module.__name__:
            sys.modules.pop(previous.module, None)  # in-flight requests keep their class (and its module)
        return sorted(new), sorted(old_names - new.keys())

    def discard(self, loaded: LoadedFile) -> None:
        """ Forgets a loaded file that will not be committed. """
        if sys.modules.get(loaded.module.__name__) is loaded.module:
            del sys.modules[loaded.module.__name__]

    def undeploy_file(self, path: Path | str) -> list[str]:
        """ Undeploys every service a user's file deployed; returns their names. """
        key = _file_key(path)
        self.file_errors.pop(key, None)
        previous = self.files.pop(key, None)
        if previous is None:
            return []
        entries = dict(self.entries)
        for name in previous.names:
            entries.pop(name, None)
        self.entries = entries
        sys.modules.pop(previous.module, None)
        return list(previous.names)

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


def _file_key(path: Path | str) -> str:
    """ A user file's identity: its absolute path, symbolic links not resolved (a link in the
    pickup directory is deployed under its own name). """
    return os.path.abspath(path)


def _error_line(exc: BaseException, path: Path) -> int | None:
    """ The last line of `path` in the traceback: where the error is, or the import that led to it. """
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == str(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
