""" Internal services of the user config plugin (`zato.builtin.user_config`). """

from __future__ import annotations

from zato.builtin.user_config import RELOAD, files_of
from zato.server.service import Service


class Reload(Service):
    """ Re-reads every user config file in every worker (Zato's `util.config.reload` idea). """
    name = "zato.user-config.reload"

    async def handle(self):
        await self.server.notify(RELOAD, {})
        files = files_of(self.server)
        self.response.payload = {"reloaded": sorted(files.paths), "files": {n: str(p) for n, p in files.paths.items()}}
