""" The layers hold (docs/plugins.md, "Layers"): the core proper imports no plugin, the built-in
plugins import the core and not each other, plugins/* import the core and no built-in, and a
private module is imported only inside its own package. The import-linter contracts in
pyproject.toml say so; these tests run them, check that they name every module, and check at
run time what a static scan cannot see. """

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import zato
import zato.builtin

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = {contract["id"]: contract
             for contract in tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["importlinter"]["contracts"]}


def _layer_modules(layer: str) -> set[str]:
    return {name.strip().strip("()") for name in layer.replace("|", ":").split(":") if name.strip()}


def test_the_import_contracts_hold():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"import-linter contracts broken (pyproject.toml, [tool.importlinter]; see the " \
                                   f"Layers section of docs/plugins.md):\n{result.stdout}\n{result.stderr}"
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout, result.stdout


def test_every_module_of_zato_is_in_a_layer():
    """ A new package under zato/ must be placed in the contract, else nothing would check it. """
    core, builtin, plugins = (_layer_modules(layer) for layer in CONTRACTS["layers"]["layers"][::-1])
    assert builtin == {"zato.builtin"}
    in_this_repository = {package.name for package in (ROOT / "plugins").glob("*/src/zato_plugin_*")}
    assert plugins == in_this_repository, f"the `layers` contract in pyproject.toml must name every plugin of " \
                                          f"plugins/*: missing {sorted(in_this_repository - plugins)}"
    core_dir = [str(Path(zato.__file__).parent)]  # not the modules plugins add to the package (zato.enclog)
    modules = {f"zato.{module.name}" for module in pkgutil.iter_modules(core_dir) if not module.name.startswith("_")} \
        - {"zato.builtin"}
    assert modules == core, f"add {sorted(modules - core)} to the core layer of the `layers` contract in " \
                            f"pyproject.toml" if modules - core else f"{sorted(core - modules)} no longer exist"


def test_every_builtin_module_is_checked_for_independence():
    modules = {f"zato.builtin.{module.name}" for module in pkgutil.iter_modules(zato.builtin.__path__)}
    listed = set(CONTRACTS["builtins-independent"]["modules"])
    assert modules == listed, f"the `builtins-independent` contract in pyproject.toml must list every built-in " \
                              f"module: missing {sorted(modules - listed)}, gone {sorted(listed - modules)}"


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_the_core_and_its_zato_import_paths_load_no_builtin_plugin():
    """ What service code imports from the core (Zato's paths included) brings no plugin in. """
    result = _run_python("""
import sys
import zato.cli, zato.cli.admin_client, zato.common.api, zato.common.pubsub, zato.common.rate_limiting
import zato.enmasse, zato.objects, zato.plugins, zato.server.admin_auth, zato.server.credentials
import zato.server.server, zato.server.service, zato.server.service.patterns, zato.testing
from zato.common.pubsub import PubSubMessage
from zato.common.api import SMTPMessage
assert PubSubMessage(msg_id="zpsm1", data=1, pub_time=0.0, expiration_time=0.0).to_dict()["pub_time_iso"] == \
    "1970-01-01T00:00:00"
assert SMTPMessage(to="a@example.com").to == "a@example.com"
print(sorted(name for name in sys.modules if name.startswith("zato.builtin.")))
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"the core imported built-in plugins: {result.stdout}"


def test_rate_limit_fields_are_checked_whether_or_not_the_plugin_was_imported():
    """ The check is the core's: a bad definition is refused before the rate_limit plugin is ever
    imported, as it is after (it used to be accepted until that module happened to be loaded). """
    result = _run_python("""
import sys
from zato.builtin.rest import CHANNEL_REST
from zato.objects import ObjectValidationError, validate
assert "zato.builtin.rate_limit" not in sys.modules
try:
    validate(CHANNEL_REST, {"name": "x", "url_path": "/x", "service": "s", "rate_limit_def": "* = 5/w"})
except ObjectValidationError as exc:
    print(exc.errors)
else:
    print("accepted")
assert "zato.builtin.rate_limit" not in sys.modules
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str([{"field": "rate_limit_def", "error": "line 1: `* = 5/w`: the unit 'w' is "
                                                                              "not one of m (per minute), h (per hour) "
                                                                              "or d (per day)"}])


def test_a_zato_package_taken_over_at_start_stops_the_command_and_the_server_saying_how_to_repair_it():
    """ The published zato-enclog's *-nspkg.pth makes `zato` a bare module at interpreter start
    (zato/__init__.py never runs); the CLI and the server say what to uninstall instead of an
    ImportError about __version__. """
    for module in ("zato.cli", "zato.server.main"):
        result = _run_python(f"""
import importlib.util, sys
from importlib.machinery import PathFinder
import zato as real
sys.modules["zato"] = importlib.util.module_from_spec(PathFinder.find_spec("zato", [real.__path__[0].rsplit("/", 1)[0]]))
import {module}
""")
        assert result.returncode == 1, (module, result.stdout, result.stderr)
        assert "taken over when Python started" in result.stderr and "pip uninstall zato-enclog" in result.stderr


def test_a_plugin_module_that_is_not_installed_names_the_plugin_to_install():
    result = _run_python("""
import sys
sys.modules["zato.enclog"] = None  # as if zato-plugin-enclog were not installed
try:
    import zato_bst_not_here
except ImportError as exc:
    print("plain:", exc)
from zato._plugin_modules import MissingPluginModule
try:
    MissingPluginModule.find_spec("zato_bst")
except ModuleNotFoundError as exc:
    print("named:", exc)
""")
    assert result.returncode == 0, result.stderr
    assert "plain: No module named 'zato_bst_not_here'" in result.stdout
    assert "named: No module named 'zato_bst': it comes with the bst plugin; install it with `pip install " \
           "zato-plugin-bst`" in result.stdout


def test_the_articles_imports_without_the_plugins_on_sys_path_name_the_plugin_to_install():
    """ A real import, as in the articles, in a Python whose sys.path lacks the two plugins'
    directories (as if zato-plugin-bst and zato-plugin-enclog were not installed). `zato` is
    imported first, as it is wherever a service module runs (the finder that names the plugin
    comes with it; before any `import zato`, `import zato_bst` fails with Python's own message). """
    hidden = [str(ROOT / "plugins" / name / "src") for name in ("bst", "enclog")]
    result = _run_python(f"""
import os, sys
hidden = {hidden!r}
assert "zato" not in sys.modules and "zato_bst" not in sys.modules
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") not in [os.path.realpath(h) for h in hidden]]
import zato
for statement in ("from zato_bst import transition_to", "from zato.enclog import EncryptedLogFormatter, genkey"):
    try:
        exec(statement)
    except ImportError as exc:
        print("ImportError |", statement, "|", exc)
    else:
        print("imported |", statement)
""")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert lines[0].startswith("ImportError | from zato_bst import transition_to | ") and \
        "`pip install zato-plugin-bst`" in lines[0], lines[0]
    assert lines[1].startswith("ImportError | from zato.enclog import EncryptedLogFormatter, genkey | ") and \
        "`pip install zato-plugin-enclog`" in lines[1], lines[1]
