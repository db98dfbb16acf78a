""" The plugin's test kit: a stand-in queue manager under the real `ibmmq` / `pymqi` Python layers. """

from .standin import QueueManagerStandIn, StandInMessage, c_module, install, installed, uninstall

__all__ = ['QueueManagerStandIn', 'StandInMessage', 'c_module', 'install', 'installed', 'uninstall']
