""" Zato: a minimal trio core plus pluggy plugins for integration services.

The public surface for plugin authors is `zato.hookimpl` and the contract in `zato.hookspecs`;
service authors use `zato.server.service`.
"""

__version__ = "0.1.0"

from pkgutil import extend_path as _extend_path

import pluggy as _pluggy

# Plugin distributions may add modules under zato. (zato-plugin-enclog: zato/enclog.py, Zato's
# import path); importing one that is not installed names the plugin (zato._plugin_modules)
__path__ = _extend_path(__path__, __name__)

from zato import _plugin_modules  # noqa: E402

_plugin_modules.install()

PROJECT_NAME = "zato"

# Plugins decorate their hook implementations with this marker.
hookimpl = _pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["__version__", "PROJECT_NAME", "hookimpl"]
