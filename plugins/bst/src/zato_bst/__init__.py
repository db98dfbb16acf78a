""" `from zato_bst import transition_to`, as Zato's BST articles import it (the `bst` plugin,
zato-plugin-bst). """

from zato_plugin_bst.api import BSTError, BSTNotEnabled, TransitionConflict, TransitionRefused, transition_to

__all__ = ["BSTError", "BSTNotEnabled", "TransitionConflict", "TransitionRefused", "transition_to"]
