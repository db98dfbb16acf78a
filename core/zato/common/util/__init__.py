""" Helpers that code written for Zato imports from `zato.common.util`. """

from __future__ import annotations

import secrets

from zato.config import as_bool, get_config

__all__ = ["as_bool", "get_config", "new_cid"]


def new_cid() -> str:
    """ A new correlation ID: 24 random hex characters (96 bits). """
    return secrets.token_hex(12)
