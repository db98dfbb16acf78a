""" `zato plugin check [NAME]`: the real CLI in a subprocess against the installed connectors and
against deliberately bad plugins installed through real entry points (`PluginSite`): a typo'd
hook, an argument no hook passes, a wrapper where wrappers are refused, a module that does not
import, an undocumented field and a heavy import. """

from __future__ import annotations

import json
import subprocess
import sys

ZATO = [sys.executable, "-c", "import sys; from zato.cli import main; sys.exit(main())"]


def zato(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*ZATO, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def checked(result: subprocess.CompletedProcess) -> dict:
    """ The --json report of the one plugin checked. """
    assert result.stdout, result.stderr
    data = json.loads(result.stdout)
    assert len(data["plugins"]) == 1, data
    return data["plugins"][0]


def lines(report: dict, status: str, check: str | None = None) -> list[dict]:
    return [item for item in report["checks"] if item["status"] == status and (check is None or item["check"] == check)]


GOOD = """\
'''A well-behaved test plugin: one documented object type, one CLI command.'''
import click
from zato.plugin_api import Field, ObjectType, hookimpl


@hookimpl
def register_object_types(register):
    register(ObjectType("checked_thing", (
        Field("name", required=True, description="The thing's name"),
        Field("size", "int", default=1, description="How big it is"),
    ), description="Things a test plugin keeps"))


@hookimpl
def register_cli_commands(cli):
    @cli.command("checked-hello")
    def hello():
        click.echo("hello")
"""

UNDOCUMENTED_AND_HEAVY = """\
import time
from zato.plugin_api import Field, ObjectType, hookimpl

time.sleep(0.6)  # as heavy as importing a big library at import time


@hookimpl
def register_object_types(register):
    register(ObjectType("sloppy_thing", (
        Field("name", required=True, description="The name"),
        Field("host"),
        Field("port", "int", description="  "),
    )))
"""

UNKNOWN_ARGUMENT = """\
from zato.plugin_api import hookimpl


@hookimpl
def register_http_routes(register, server):
    pass
"""

TYPO_AND_WRAPPER = """\
from zato.plugin_api import hookimpl


@hookimpl
def register_chanel_types(register):
    pass


@hookimpl(wrapper=True)
def register_object_types(register):
    return (yield)
"""

DOES_NOT_IMPORT = """\
from zato.plugin_api import hookimpl

VALUE = 1
raise RuntimeError("this plugin needs a licence file")
"""


def test_installed_connectors_pass_with_what_they_register():
    result = zato("plugin", "check", "smtp", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = checked(result)
    assert report["ok"] and report["distribution"] == "zato-plugin-smtp" and not lines(report, "fail")
    registered = {item["details"]["kind"]: item["details"]["names"] for item in lines(report, "ok", "registers")}
    assert registered["object_types"] == ["email_smtp"] and registered["outgoing_connection_types"] == ["smtp"]
    assert lines(report, "ok", "hooks")[0]["details"]["hooks"] == ["register_connectors"]
    assert lines(report, "ok", "start") and lines(report, "ok", "docs")
    timing = (lines(report, "ok", "import_time") + lines(report, "warn", "import_time"))[0]["details"]
    assert 0 <= timing["seconds"] < 5 and timing["runs"] == 3


def test_redis_as_lines_with_its_server_conf_section_and_service_attribute():
    result = zato("plugin", "check", "redis")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "redis (zato-plugin-redis" in out
    assert "✓ hooks:" in out and "✓ start: a throw-away server" in out
    assert "✓ registers: server.conf sections: kvdb" in out and "✓ registers: service attributes: kvdb" in out
    assert "✓ docs: every field" in out and "import_time: importing zato_plugin_redis" in out
    assert "✗" not in out


def test_an_opt_in_plugin_is_switched_on_for_the_check(plugin_site):
    plugin_site.add("checked", GOOD, opt_in=True)
    report = checked(zato("plugin", "check", "checked", "--json"))
    assert report["opt_in"] and report["ok"], report
    registered = {item["details"]["kind"]: item["details"]["names"] for item in lines(report, "ok", "registers")}
    assert registered["object_types"] == ["checked_thing"]
    assert registered["cli_commands"] == ["checked-hello"]
    assert "every field of its 1 object type(s) is documented (2 fields)" in lines(report, "ok", "docs")[0]["message"]


def test_undocumented_fields_fail_and_a_heavy_import_is_warned_about(plugin_site):
    module = plugin_site.add("sloppy", UNDOCUMENTED_AND_HEAVY)
    result = zato("plugin", "check", "sloppy", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = checked(result)
    docs = lines(report, "fail", "docs")
    assert docs and docs[0]["details"]["undocumented"] == ["sloppy_thing.host", "sloppy_thing.port"]
    assert lines(report, "warn", "docs")[0]["details"]["undocumented_types"] == ["sloppy_thing"]
    slow = lines(report, "warn", "import_time")
    assert slow, report["checks"]
    assert slow[0]["details"]["seconds"] > 0.5 and slow[0]["details"]["heaviest"][0]["module"] == module
    assert module in slow[0]["message"] and "--import-threshold" in slow[0]["message"]

    text = zato("plugin", "check", "sloppy", "--import-threshold", "5", "--runs", "1")
    assert text.returncode == 1
    assert "✗ docs: 2 field(s) of its object types have no description: sloppy_thing.host, sloppy_thing.port" \
        in text.stdout
    assert "one cold run" in text.stdout and "! import_time" not in text.stdout


def test_hookimpl_asking_for_an_argument_the_hook_does_not_pass_fails(plugin_site):
    module = plugin_site.add("greedy", UNKNOWN_ARGUMENT)
    result = zato("plugin", "check", "greedy", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = checked(result)
    [problem] = lines(report, "fail", "hooks")
    assert "register_http_routes" in problem["message"] and "asks for server" in problem["message"]
    assert f"{module}.py:5" in problem["message"]  # the function's file:line
    assert not lines(report, "ok", "start")  # a plugin pluggy refuses is not started


def test_unknown_hook_and_refused_wrapper_fail_with_file_and_line(plugin_site):
    module = plugin_site.add("typo", TYPO_AND_WRAPPER)
    result = zato("plugin", "check", "typo")
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "✗ hooks: register_chanel_types" in out and "did you mean 'register_channel_types'?" in out
    assert f"{module}.py:5" in out
    assert "register_object_types" in out and "wrapper=True" in out and f"{module}.py:10" in out


def test_plugin_that_does_not_import_reports_its_own_error_and_line(plugin_site):
    module = plugin_site.add("broken", DOES_NOT_IMPORT)
    result = zato("plugin", "check", "broken", "--json")
    assert result.returncode == 1
    [problem] = lines(checked(result), "fail", "import")
    assert "RuntimeError: this plugin needs a licence file" in problem["message"]
    assert problem["details"]["where"].endswith(f"{module}.py:4")


def test_a_plugin_that_does_not_import_does_not_stop_another_ones_check(plugin_site):
    """ The throw-away server is made by quickstart, which migrates every installed plugin's
    tables: a plugin that cannot be imported is left out of that, not a stop for the others. """
    plugin_site.add("broken", DOES_NOT_IMPORT)
    result = zato("plugin", "check", "smtp", "--json", "--runs", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert checked(result)["ok"]


def test_unknown_plugin_is_a_usage_error_listing_the_installed_ones():
    result = zato("plugin", "check", "no_such_plugin")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no plugin named 'no_such_plugin' is installed" in result.stderr
    assert "smtp" in result.stderr and "redis" in result.stderr


def test_without_a_name_every_installed_plugin_is_checked_and_one_bad_one_fails_the_run(plugin_site):
    plugin_site.add("sloppy", UNDOCUMENTED_AND_HEAVY)
    result = zato("plugin", "check", "--json", "--runs", "1", timeout=600)
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    by_name = {report["name"]: report for report in data["plugins"]}
    assert not data["ok"] and not by_name["sloppy"]["ok"]
    assert {"smtp", "redis", "sql"} <= set(by_name) and by_name["smtp"]["ok"]
    assert not any(report["builtin"] for report in data["plugins"])


FAILS_AT_START = """\
from zato.plugin_api import hookimpl


@hookimpl
def startup_phase(phase, ctx):
    if phase == "AFTER_STARTED":
        raise ValueError("cannot reach the licence server")
"""


def test_plugin_that_stops_the_server_starting_fails_with_its_error_and_line(plugin_site):
    module = plugin_site.add("unlicensed", FAILS_AT_START)
    result = zato("plugin", "check", "unlicensed", "--json", "--runs", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    report = checked(result)
    assert lines(report, "ok", "hooks")
    [problem] = lines(report, "fail", "start")
    assert "ValueError: cannot reach the licence server" in problem["message"]
    assert problem["details"]["where"].endswith(f"{module}.py:7")
    assert not lines(report, "ok", "registers")
