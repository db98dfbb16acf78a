""" Helpers that code written for Zato imports from `zato.common.util` (Zato 2.0 and 3.0) or
`zato.common.util.api` (Zato 3.1+): the same functions under both names. """

from __future__ import annotations

from zato.common.util.api import as_bool, get_config, new_cid

__all__ = ["as_bool", "get_config", "new_cid"]
