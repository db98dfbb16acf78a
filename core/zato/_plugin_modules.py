""" Import paths that Zato's articles use and that plugins provide: `from zato.enclog import ...`
(zato-plugin-enclog), `from zato_bst import transition_to` (zato-plugin-bst).

* A distribution may add modules to the core's `zato` package (zato/__init__.py extends its
  `__path__` with every `zato/` directory on sys.path, as pkgutil does), so zato-plugin-enclog
  ships `zato/enclog.py` without touching the core's files.
* When such a module is not installed, importing it fails with an error naming the plugin to
  install (`MissingPluginModule`, the last finder on sys.meta_path, asked only after every other
  finder found nothing) rather than a bare "No module named".
"""

from __future__ import annotations

import sys
from typing import Any

# module -> (plugin, distribution)
PLUGIN_MODULES = {
    "zato.enclog": ("enclog", "zato-plugin-enclog"),
    "zato_bst": ("bst", "zato-plugin-bst"),
}


class MissingPluginModule:
    """ A meta path finder of last resort for `PLUGIN_MODULES`. """

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        found = PLUGIN_MODULES.get(name)
        if found is not None:
            plugin, distribution = found
            raise ModuleNotFoundError(f"No module named {name!r}: it comes with the {plugin} plugin; install it with "
                                      f"`pip install {distribution}` in the server's environment", name=name)
        return None


def install() -> None:
    if MissingPluginModule not in sys.meta_path:
        sys.meta_path.append(MissingPluginModule)  # type: ignore[arg-type]


def check_package_intact() -> None:
    """ Stops the `zato` command and the server with what to do when the `zato` package was
    taken over at interpreter start, so that zato/__init__.py never ran: the published
    zato-enclog installs a `*-nspkg.pth` file that does that. Its own `zato enclog` is this
    project's plugin; uninstalling it repairs everything (it removes only its own files). """
    module = sys.modules.get("zato")
    if module is None or hasattr(module, "PROJECT_NAME"):
        return
    import glob
    import os
    import site
    found = [path for directory in site.getsitepackages() for path in glob.glob(os.path.join(directory, "*-nspkg.pth"))]
    raise SystemExit(
        "error: the `zato` package was taken over when Python started, by a namespace .pth file ("
        + (", ".join(found) or "a *-nspkg.pth in site-packages") + "), so the core's zato/__init__.py never ran. "
        "The published zato-enclog package does this: run `pip uninstall zato-enclog` (nothing needs reinstalling) "
        "and use `zato enclog` (zato-plugin-enclog) instead, or keep zato-enclog in a virtual environment of its own")
