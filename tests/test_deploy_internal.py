""" `[deploy_internal]` of server.conf, as Zato's: the one place plugins and modules of internal
services are switched. Quickstart writes a line per plugin (and per module of a plugin that has
several) after a comment saying what it brings; a plugin line off is never imported, a module
line off leaves its services undeployed; a plugin installed later gets its line at start; a
server made with `[plugins]` keeps working with one warning; `[component_enabled]` switches a
plugin of its name; a service that uses a connector whose plugin is not there gets an error
saying what to install and which line to switch on, and its deployment is warned about. """

from __future__ import annotations

import configparser
import os
import stat
import textwrap

import httpx
import pytest

from zato.plugins import discover_plugins
from zato.testing import ServerProcess, admin_auth, create_test_server_dir, run_server, set_config_value
from zato.server.server import WorkerOptions

TWO_MODULES_SOURCE = '''
""" The `twomods` plugin: greetings and farewells, for tests. """

from zato import hookimpl

@hookimpl
def register_internal_services(register):
    register("{module}_greet")
    register("{module}_bye")
'''

GREET_SOURCE = '''
""" Greeting services. """
from zato.server.service import Service

class Greet(Service):
    name = "twomods.greet"
    def handle(self):
        self.response.payload = {"hello": True}
'''

BYE_SOURCE = '''
""" Farewell services. """
from zato.server.service import Service

class Bye(Service):
    name = "twomods.bye"
    def handle(self):
        self.response.payload = {"bye": True}
'''


def add_two_module_plugin(plugin_site) -> tuple[str, str, str]:
    """ A plugin registering two modules of internal services; (its module, greet module, bye module). """
    import uuid
    module = f"zato_test_plugin_twomods_{uuid.uuid4().hex[:8]}"
    plugin_site.add("twomods", TWO_MODULES_SOURCE.replace("{module}", module), module=module,
                    files={f"{module}_greet.py": GREET_SOURCE, f"{module}_bye.py": BYE_SOURCE})
    plugin_site.modules.extend([f"{module}_greet", f"{module}_bye"])
    return module, f"{module}_greet", f"{module}_bye"


def server_conf(base_dir) -> str:
    return (base_dir / "config" / "server.conf").read_text("utf-8")


def deploy_internal_of(base_dir) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_string(server_conf(base_dir))
    return dict(parser["deploy_internal"])


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


# ################################################################################################
# Quickstart


def test_quickstart_writes_a_line_per_plugin_and_per_module_each_after_its_comment(plugin_site, tmp_path):
    module, greet, bye = add_two_module_plugin(plugin_site)
    base_dir = create_test_server_dir(tmp_path / "server")
    text = server_conf(base_dir)
    assert "[plugins]" not in text
    assert stat.S_IMODE(os.stat(base_dir / "config" / "server.conf").st_mode) == 0o600
    lines = text.splitlines()

    def comment_before(key: str) -> str:
        index = lines.index(f"{key} = True")
        above = index - 1
        while lines[above].startswith("#   "):  # a wrapped comment's continuation
            above -= 1
        return " ".join(line.lstrip("# ") for line in lines[above:index])

    assert comment_before(module) == "twomods (zato-plugin-twomods): greetings and farewells, for tests"
    assert comment_before(greet) == "twomods: Greeting services"
    assert comment_before(bye) == "twomods: Farewell services"
    # the built-in plugins, by module as Zato's lines are, with what each brings
    assert "REST channels, which expose services over HTTP" in comment_before("zato.builtin.rest")
    assert "(cannot be switched off)" in comment_before("zato.builtin.essentials")
    # a third-party plugin: its distribution's summary
    assert comment_before("zato_plugin_ftp").startswith("ftp (zato-plugin-ftp): Outgoing FTP and FTPS connections")
    # an opt-in plugin is there, commented out, saying how to switch it on
    assert ("# off until switched on: uncomment the line below, or set [component_enabled] ibm_mq = True as in "
            "Zato\n# zato_plugin_ibm_mq = True\n") in text
    values = deploy_internal_of(base_dir)
    assert values[module] == values[greet] == values[bye] == "True" and "zato_plugin_ibm_mq" not in values
    assert {plugin_module for plugin_module in values} >= {"zato.builtin.essentials", "zato_plugin_ftp"}


# ################################################################################################
# Switching off


PROBE = '''
import sys
from zato.server.service import Service

class Probe(Service):
    name = "t.deploy_internal.probe"
    def handle(self):
        self.response.payload = {"imported": sorted(m for m in sys.modules if m.startswith("%s"))}
'''


def probe_imports(base_dir) -> list[str]:
    with ServerProcess(base_dir) as process:
        with httpx.Client(base_url=process.address, auth=admin_auth(), timeout=30) as admin:
            reply = admin.post("/zato/api/invoke/t.deploy_internal.probe", json={})
            assert reply.status_code == 200, reply.text
            return reply.json()["imported"]


def test_a_plugin_line_switched_off_is_never_imported_by_the_server(plugin_site, tmp_path):
    marker = tmp_path / "imported"
    module = plugin_site.add("noisy", f"open({str(marker)!r}, 'a').write('x')\n")
    base_dir = create_test_server_dir(tmp_path / "server")
    (base_dir / "pickup" / "probe.py").write_text(PROBE % module)
    assert deploy_internal_of(base_dir)[module] == "True"

    set_config_value(base_dir, "deploy_internal", module, "False")
    marker.unlink(missing_ok=True)  # quickstart read the plugin to list its modules
    assert probe_imports(base_dir) == []
    assert not marker.exists()

    set_config_value(base_dir, "deploy_internal", module, "True")  # the same server with it on: the check can fail
    assert probe_imports(base_dir) == [module]
    assert marker.exists()


async def test_a_module_line_switched_off_leaves_its_services_undeployed(plugin_site, tmp_path, caplog):
    module, greet, bye = add_two_module_plugin(plugin_site)
    base_dir = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 3})
    async with run_server(base_dir) as server:
        assert "twomods.greet" in server.services and "twomods.bye" in server.services

    set_config_value(base_dir, "deploy_internal", bye, "False")
    with caplog.at_level("INFO"):
        async with run_server(base_dir) as server:
            assert "twomods" in server.plugins.enabled_names()
            assert "twomods.greet" in server.services and "twomods.bye" not in server.services
            assert server.internal_services_source == "fresh"  # the switch changed what is cached
            async with httpx.AsyncClient(base_url=server.address) as client:
                reply = await client.post("/zato/api/invoke/twomods.bye", auth=admin_auth())
                assert reply.status_code == 404, reply.text
    assert f"internal services of {bye} not deployed: [deploy_internal] {bye} = False in server.conf" in caplog.text

    # --sync-internal rebuilds the cache from the switches, as the article says
    caplog.clear()
    with caplog.at_level("INFO"):
        async with run_server(base_dir, WorkerOptions(sync_internal=True)) as server:
            assert server.internal_services_source == "fresh"
            assert "twomods.greet" in server.services and "twomods.bye" not in server.services
    assert "start-up cache rebuilt: --sync-internal given" in caplog.text
    async with run_server(base_dir) as server:  # and the next start uses that cache
        assert server.internal_services_source == "cache" and "twomods.bye" not in server.services


async def test_a_switch_that_is_not_a_boolean_stops_start_up_naming_file_section_and_key(server_dir):
    from zato.config import ConfigError
    set_config_value(server_dir, "deploy_internal", "zato_plugin_ftp", "perhaps")
    with pytest.raises(ConfigError) as info:
        async with run_server(server_dir):
            pass
    message = str(info.value)
    assert "server.conf: [deploy_internal] zato_plugin_ftp = 'perhaps'" in message and "True or False" in message


# ################################################################################################
# A plugin installed after the server was created


async def test_a_plugin_installed_later_gets_its_line_added_with_one_log_line(server_dir, plugin_site, caplog):
    conf = server_dir / "config" / "server.conf"
    set_config_value(server_dir, "main", "name", "kept  # and this comment too")
    before = server_conf(server_dir)
    module = plugin_site.add("later", '""" The `later` plugin: installed after the server. """\n')

    with caplog.at_level("INFO", logger="zato.plugins"):
        async with run_server(server_dir) as server:
            assert "later" in server.plugins.enabled_names()
    added = [r.getMessage() for r in caplog.records if "added to [deploy_internal]" in r.getMessage()]
    assert len(added) == 1 and added[0].endswith(f"since the server was created: {module}"), added

    after = server_conf(server_dir)
    assert deploy_internal_of(server_dir)[module] == "True"
    assert f"# later (zato-plugin-later): installed after the server\n{module} = True\n" in after
    # every line that was there is still there, in its order; only the two new lines are new
    assert [line for line in after.splitlines() if line not in (f"{module} = True",
                                                                "# later (zato-plugin-later): installed after the server")] \
        == before.splitlines()
    assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600
    # the line is added in [deploy_internal], before the next section
    lines = after.splitlines()
    headers = [index for index, line in enumerate(lines) if line.startswith("[")]
    stanza = lines.index("[deploy_internal]")
    next_section = next(index for index in headers if index > stanza)
    assert stanza < lines.index(f"{module} = True") < next_section

    caplog.clear()
    with caplog.at_level("INFO", logger="zato.plugins"):
        async with run_server(server_dir):
            pass
    assert "added to [deploy_internal]" not in caplog.text and server_conf(server_dir) == after


async def test_a_plugin_installed_later_switched_off_in_plugins_gets_its_line_as_switched(server_dir, plugin_site):
    module = plugin_site.add("later", "")
    set_config_value(server_dir, "plugins", "later", "False")
    async with run_server(server_dir) as server:
        assert "later" not in server.plugins.enabled_names()
    assert deploy_internal_of(server_dir)[module] == "False"  # what it was, not a default that disagrees


# ################################################################################################
# Servers made with [plugins]


def make_old_style(base_dir, plugins: dict[str, str]) -> None:
    """ server.conf as quickstart wrote it before [deploy_internal]: a [plugins] section instead. """
    conf = base_dir / "config" / "server.conf"
    lines, out, skipping = conf.read_text("utf-8").splitlines(), [], False
    for line in lines:
        if line.strip().startswith("["):
            skipping = line.strip() == "[deploy_internal]"
            if skipping:
                out.append("[plugins]")
                out.extend(f"{name} = {value}" for name, value in plugins.items())
                out.append("")
        if not skipping:
            out.append(line)
    conf.write_text("\n".join(out) + "\n", "utf-8")


async def test_a_server_made_with_plugins_starts_with_one_warning_naming_the_new_stanza(server_dir, caplog):
    make_old_style(server_dir, {"cache": "False", "rest": "True"})
    assert "[deploy_internal]" not in server_conf(server_dir).splitlines()
    with caplog.at_level("WARNING"):
        async with run_server(server_dir) as server:
            assert "cache" not in server.plugins.enabled_names() and "rest" in server.plugins.enabled_names()
    warnings = [w for w in warnings_of(caplog) if "[plugins]" in w or "deploy_internal" in w]
    assert len(warnings) == 1, warnings
    assert "plugins are switched in [deploy_internal] now" in warnings[0]
    assert "move its lines under [deploy_internal] (`cache = False` as `zato.builtin.cache = False`, " \
           "`rest = True` as `zato.builtin.rest = True`) and remove [plugins]" in warnings[0]
    # the stanza was added, with what [plugins] said, so that the two agree
    values = deploy_internal_of(server_dir)
    assert values["zato.builtin.cache"] == "False" and values["zato.builtin.rest"] == "True"


async def test_where_both_stanzas_name_a_plugin_plugins_wins_and_the_warning_says_so(server_dir, caplog):
    set_config_value(server_dir, "plugins", "cache", "False")  # [deploy_internal] zato.builtin.cache = True
    with caplog.at_level("WARNING"):
        async with run_server(server_dir) as server:
            assert "cache" not in server.plugins.enabled_names()
    warnings = [w for w in warnings_of(caplog) if "[plugins]" in w]
    assert len(warnings) == 1, warnings
    assert "[plugins] wins: [plugins] cache = False over [deploy_internal] zato.builtin.cache = True" in warnings[0]


# ################################################################################################
# [component_enabled]


async def test_component_enabled_switches_the_plugin_of_its_name(server_dir, caplog):
    set_config_value(server_dir, "component_enabled", "ftp", "False")  # [deploy_internal] says True
    with caplog.at_level("WARNING"):
        async with run_server(server_dir) as server:
            assert "ftp" not in server.plugins.enabled_names()
    assert any("[component_enabled] wins, as in Zato, so plugin 'ftp' is off" in w for w in warnings_of(caplog))


async def test_component_enabled_ibm_mq_without_the_plugin_says_which_distribution_to_install(
        server_dir, caplog, monkeypatch):
    # The IBM MQ article's switch on a server where zato-plugin-ibm-mq is not installed: discovery
    # is made to skip its entry point, as it would once the distribution is uninstalled
    import zato.plugins
    installed = [p for p in discover_plugins() if p.name != "ibm_mq"]
    monkeypatch.setattr(zato.plugins, "discover_plugins", lambda: list(installed))
    set_config_value(server_dir, "component_enabled", "ibm_mq", "True")
    with caplog.at_level("WARNING"):
        async with run_server(server_dir) as server:
            assert "ibm_mq" not in server.plugins.enabled_names()
    hints = [w for w in warnings_of(caplog) if "ibm_mq" in w]
    assert hints == ["[component_enabled] ibm_mq = True in server.conf: no ibm_mq plugin is installed, so it stays "
                     "off; install zato-plugin-ibm-mq (pip install zato-plugin-ibm-mq) and restart the server"], hints

    # its [deploy_internal] line switched on, without the distribution: the same advice
    set_config_value(server_dir, "component_enabled", "ibm_mq", "False")
    set_config_value(server_dir, "deploy_internal", "zato_plugin_ibm_mq", "True")
    caplog.clear()
    with caplog.at_level("WARNING"):
        async with run_server(server_dir) as server:
            assert "ibm_mq" not in server.plugins.enabled_names()
    hints = [w for w in warnings_of(caplog) if "ibm_mq" in w]
    assert len(hints) == 1 and "zato_plugin_ibm_mq (the ibm_mq plugin: install zato-plugin-ibm-mq)" in hints[0], hints


# ################################################################################################
# Services that use a connector whose plugin is not there


USES_CONNECTORS = '''
from zato.server.service import Service

def attempt(reach):
    try:
        reach()
    except Exception as exc:
        return [type(exc).__name__, str(exc)]
    return "ok"

class UsesConnectors(Service):
    name = "t.uses.connectors"
    def handle(self):
        self.response.payload = {
            "outgoing.ftp": attempt(lambda: self.outgoing.ftp.get("files")),
            "out.wsx": attempt(lambda: self.out.wsx["remote"]),
            "cloud.dropbox": attempt(lambda: self.cloud.dropbox["box"]),
            "outgoing.ibm_mq": attempt(lambda: self.outgoing.ibm_mq.send("x", "q", "QUEUE")),
            "request.ibm_mq": attempt(lambda: self.request.ibm_mq),
            "kvdb": attempt(lambda: self.kvdb.conn),
        }
'''


async def test_a_service_using_a_connector_whose_plugin_is_off_gets_an_error_naming_plugin_and_line(
        server_dir, caplog):
    for module in ("zato_plugin_ftp", "zato_plugin_wsx", "zato_plugin_dropbox", "zato_plugin_redis"):
        set_config_value(server_dir, "deploy_internal", module, "False")
    path = server_dir / "pickup" / "uses_connectors.py"
    path.write_text(textwrap.dedent(USES_CONNECTORS))
    with caplog.at_level("WARNING"):
        async with run_server(server_dir) as server:
            async with httpx.AsyncClient(base_url=server.address) as client:
                reply = await client.post("/zato/api/invoke/t.uses.connectors", auth=admin_auth())
    assert reply.status_code == 200, reply.text
    result = reply.json()
    for key, plugin, line in (
            ("outgoing.ftp", "ftp", "zato_plugin_ftp"), ("out.wsx", "wsx", "zato_plugin_wsx"),
            ("cloud.dropbox", "dropbox", "zato_plugin_dropbox"), ("outgoing.ibm_mq", "ibm_mq", "zato_plugin_ibm_mq"),
            ("request.ibm_mq", "ibm_mq", "zato_plugin_ibm_mq"), ("kvdb", "redis", "zato_plugin_redis")):
        kind, message = result[key]
        assert kind == "PluginNotEnabled", (key, result[key])
        assert f"needs the {plugin} plugin (zato-plugin-{plugin.replace('_', '-')}), which is switched off in this " \
               f"server: set [deploy_internal] {line} = True in server.conf" in message, (key, message)
    assert result["outgoing.ftp"][1].startswith("no outgoing connection type out.ftp: self.out.ftp (self.outgoing.ftp) "
                                                "needs the ftp plugin")
    # the deploy log said so when the module was deployed: one warning for the file
    deployed = [w for w in warnings_of(caplog) if str(path) in w]
    assert len(deployed) == 1, deployed
    for what in ("self.outgoing.ftp needs the ftp plugin", "self.out.wsx needs the wsx plugin",
                 "self.cloud.dropbox needs the dropbox plugin", "self.kvdb needs the redis plugin",
                 "[deploy_internal] zato_plugin_ibm_mq = True"):
        assert what in deployed[0], (what, deployed[0])


def test_a_connector_whose_plugin_is_not_installed_names_the_distribution_to_install():
    from zato.plugins import PluginNotEnabled, plugin_needed
    from zato.server.outgoing import Outgoing
    installed = [p for p in discover_plugins() if p.name != "ftp"]
    message = plugin_needed("self.outgoing.ftp", "ftp", installed)
    assert message == ("self.outgoing.ftp needs the ftp plugin, which is not installed: install zato-plugin-ftp "
                       "(pip install zato-plugin-ftp) and restart the server, with [deploy_internal] "
                       "zato_plugin_ftp = True in server.conf")
    with pytest.raises(PluginNotEnabled) as info:
        Outgoing().namespace("outgoing").ftp
    assert "[deploy_internal] zato_plugin_ftp = True" in str(info.value)
    with pytest.raises(AttributeError, match="no outgoing connection type out.nothing; known"):
        Outgoing().namespace("out").nothing  # not a plugin's: the plain error


async def test_a_module_using_only_what_is_on_is_deployed_without_a_warning(server_dir, caplog):
    (server_dir / "pickup" / "plain.py").write_text(textwrap.dedent(USES_CONNECTORS))
    with caplog.at_level("WARNING"):
        async with run_server(server_dir) as server:
            assert "t.uses.connectors" in server.services
    # every plugin it uses is on but ibm_mq (opt-in): only that one is named
    deployed = [w for w in warnings_of(caplog) if "plain.py" in w]
    assert len(deployed) == 1 and "ibm_mq" in deployed[0] and "ftp" not in deployed[0], deployed
