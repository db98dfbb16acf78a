""" Zato: a minimal trio core plus pluggy plugins for integration services.

The public surface for plugin authors is `zato.hookimpl` and the contract in `zato.hookspecs`;
service authors use `zato.server.service`.
"""

__version__ = "0.1.0"

import pluggy as _pluggy

PROJECT_NAME = "zato"

# Plugins decorate their hook implementations with this marker.
hookimpl = _pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["__version__", "PROJECT_NAME", "hookimpl"]
