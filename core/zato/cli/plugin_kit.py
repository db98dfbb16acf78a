""" `zato plugin ...`: the plugin author's commands. `new` writes a plugin distribution from the
scaffold (zato.cli.scaffold), `check` loads an installed plugin in a throw-away server and reports
on it (zato.cli.plugin_check). `zato plugins list` (zato.cli) lists what is installed. """

from __future__ import annotations

import click

from zato.cli.plugin_check import check
from zato.cli.scaffold import new


@click.group("plugin")
def plugin() -> None:
    """ Write and check plugins: `zato plugin new NAME`, `zato plugin check [NAME]`. """


plugin.add_command(new)
plugin.add_command(check)
