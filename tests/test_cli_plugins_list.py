""" `zato plugins list`: installed plugins with their distributions' summaries and links, and
`zato plugins list --available` reading a plugin index (docs/plugin-index.md) from a path, a
file:// URL, a real local HTTP server and [main] plugin_index of server.conf; bad index files
are refused with the file and the JSON path. The real CLI runs in a subprocess. """

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path

import pytest

from zato.testing import create_test_server_dir

ZATO = [sys.executable, "-c", "import sys; from zato.cli import main; sys.exit(main())"]
EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "plugin-index.json"


def zato(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*ZATO, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "250"})


def described_plugin(plugin_site, name: str = "described", version: str = "1.0") -> str:
    """ A plugin whose distribution's METADATA has a summary, a home page and project URLs. """
    module = plugin_site.add(name, "from zato.plugin_api import hookimpl\n", version=version)
    dist_info = plugin_site.root / f"zato_plugin_{name}-{version}.dist-info"
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: zato-plugin-{name}\nVersion: {version}\n"
        f"Summary: Connections to the {name} system for Zato services.\n"
        f"Home-page: https://example.com/{name}\n"
        f"Project-URL: Documentation, https://docs.example.com/{name}\n"
        f"Project-URL: Source, https://git.example.com/{name}\n")
    return module


def index_file(tmp_path: Path, plugins: list[dict], **top) -> Path:
    path = tmp_path / "index.json"
    path.write_text(json.dumps({"format": 1, **top, "plugins": plugins}), "utf-8")
    return path


def entry(name: str, version: str = "1.0", **more) -> dict:
    return {"name": name, "distribution": f"zato-plugin-{name}", "summary": f"the {name} plugin",
            "version": version, **more}


@pytest.fixture
def http_server(tmp_path):
    """ A real HTTP server on a free port serving tmp_path/www; its base URL. """
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# ################################################################################################
# Installed plugins: what their distributions say


def test_installed_plugins_show_their_summary_and_links(plugin_site):
    described_plugin(plugin_site)
    result = zato("plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["described"]["summary"] == "Connections to the described system for Zato services"
    assert rows["described"]["urls"] == {"Homepage": "https://example.com/described",
                                         "Documentation": "https://docs.example.com/described",
                                         "Source": "https://git.example.com/described"}
    smtp_summary = metadata.distribution("zato-plugin-smtp").metadata["Summary"]
    assert rows["smtp"]["summary"] == " ".join(smtp_summary.split()).rstrip(".")
    assert rows["cache"]["summary"] and rows["cache"]["urls"] == {}  # a built-in: its module's docstring

    table = zato("plugins", "list").stdout
    assert ("described (zato-plugin-described): Connections to the described system for Zato services (Homepage: "
            "https://example.com/described; Documentation: https://docs.example.com/described; Source: "
            "https://git.example.com/described)") in table.splitlines()
    assert f"smtp (zato-plugin-smtp): {rows['smtp']['summary']}" in table.splitlines()
    assert not any(line.startswith("cache (zato-core)") for line in table.splitlines())


# ################################################################################################
# --available: a plugin index


def test_the_example_index_in_the_docs_is_valid_and_listed_with_what_is_installed():
    result = zato("plugins", "list", "--available", "--index", EXAMPLE, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    example = json.loads(EXAMPLE.read_text("utf-8"))
    assert [row["name"] for row in data["plugins"]] == [item["name"] for item in example["plugins"]]
    for row in data["plugins"]:
        try:
            installed = metadata.distribution(row["distribution"]).version
        except metadata.PackageNotFoundError:
            installed = None
        assert row["installed"] is (installed is not None) and row["installed_version"] == installed, row
    assert "docs/examples/plugin-index.json" in (EXAMPLE.parents[1] / "plugin-index.md").read_text("utf-8")


def test_index_from_a_path_shows_installed_older_and_missing_plugins(plugin_site, tmp_path):
    described_plugin(plugin_site, "fresh", "1.2")
    described_plugin(plugin_site, "stale", "1.9")
    path = index_file(tmp_path, [entry("fresh", "1.2"), entry("stale", "1.10", kind="connector"),
                                 entry("absent", "3.0", url="https://example.com/absent", requires_core=">=999")],
                      index_url="https://pypi.example.com/simple/")
    result = zato("plugins", "list", "--available", "--index", path, "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["plugins"]}
    assert rows["fresh"]["installed"] and rows["fresh"]["installed_version"] == "1.2" and not rows["fresh"]["outdated"]
    assert rows["stale"]["installed_version"] == "1.9" and rows["stale"]["outdated"]  # 1.9 < 1.10: versions, not text
    assert not rows["absent"]["installed"] and rows["absent"]["core_compatible"] is False

    text = zato("plugins", "list", "--available", "--index", path)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert "1.9, older" in out and "needs zato-core >=999" in out
    assert ("stale: zato-plugin-stale is 1.9, the index has 1.10: pip install -U --index-url "
            "https://pypi.example.com/simple/ zato-plugin-stale==1.10") in out
    assert "absent: zato-plugin-absent is not installed: pip install --index-url https://pypi.example.com/simple/ " \
           "zato-plugin-absent==3.0" in out
    assert "fresh:" not in out.split("┘")[-1]  # nothing to do for an up-to-date plugin


def test_index_from_a_file_url(tmp_path):
    path = index_file(tmp_path, [entry("smtp", distribution="zato-plugin-smtp")])
    result = zato("plugins", "list", "--available", "--index", path.as_uri(), "--json")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)["plugins"]
    assert row["installed"] and row["installed_version"] == metadata.distribution("zato-plugin-smtp").version


def test_index_from_a_real_http_server_and_its_errors(http_server):
    root, base = http_server
    (root / "index.json").write_text(json.dumps({"format": 1, "name": "Internal", "plugins": [entry("crm", "2.0")]}))
    result = zato("plugins", "list", "--available", "--index", f"{base}/index.json", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["name"] == "Internal" and data["plugins"][0]["name"] == "crm" and not data["plugins"][0]["installed"]

    missing = zato("plugins", "list", "--available", "--index", f"{base}/nope.json")
    assert missing.returncode == 1 and f"plugin index {base}/nope.json" in missing.stderr
    assert "answered 404" in missing.stderr

    (root / "bad.json").write_text(json.dumps({"format": 1, "plugins": [entry("crm", "two")]}))
    bad = zato("plugins", "list", "--available", "--index", f"{base}/bad.json")
    assert bad.returncode == 1 and "$.plugins[0].version: 'two' is not a version" in bad.stderr


def test_index_location_from_server_conf(tmp_path):
    index = index_file(tmp_path, [entry("crm", "2.0")])
    server_dir = create_test_server_dir(tmp_path / "server", main={"plugin_index": index})
    result = zato("plugins", "list", server_dir, "--available", "--json")
    assert result.returncode == 0, result.stderr
    assert [row["name"] for row in json.loads(result.stdout)["plugins"]] == ["crm"]
    assert "unknown key" not in result.stderr  # the key is declared

    index.write_text("{}")
    bad = zato("plugins", "list", server_dir, "--available")
    assert bad.returncode == 1 and "[main] plugin_index in" in bad.stderr and str(index) in bad.stderr


BAD_INDEXES = [
    ([1, 2], "$: the index is a JSON object"),
    ({"plugins": []}, "$: 'format' is missing"),
    ({"format": 2, "plugins": []}, "$.format: format 2 is not known"),
    ({"format": 1, "plugins": {}}, "$.plugins: must be a list of entries"),
    ({"format": 1, "plugins": ["smtp"]}, "$.plugins[0]: an entry is an object"),
    ({"format": 1, "plugins": [{"name": "x", "distribution": "d", "summary": "s"}]},
     "$.plugins[0]: 'version' is missing"),
    ({"format": 1, "plugins": [entry("a"), entry("b", summry="typo")]},
     "$.plugins[1].summry: unknown key; did you mean 'summary'?"),
    ({"format": 1, "plugins": [entry("a"), entry("a")]}, "$.plugins[1].name: 'a' is listed already at $.plugins[0]"),
    ({"format": 1, "plugins": [entry("Not-A-Name")]}, "$.plugins[0].name: 'Not-A-Name' is not a plugin name"),
    ({"format": 1, "plugins": [entry("a", kind="gadget")]}, "$.plugins[0].kind: \"gadget\" is not one of"),
    ({"format": 1, "plugins": [entry("a", requires_core="=>1")]},
     "$.plugins[0].requires_core: '=>1' is not a version specifier"),
    ({"format": 1, "plugins": [entry("a", url="not a url")]}, "$.plugins[0].url: must be an http(s)://"),
    ({"format": 1, "plugins": [entry("a", summary="")]}, "$.plugins[0].summary: must be a non-empty string"),
]


@pytest.mark.parametrize(("document", "expected"), BAD_INDEXES, ids=[expected for _, expected in BAD_INDEXES])
def test_bad_index_is_refused_with_the_file_and_the_json_path(tmp_path, document, expected):
    path = tmp_path / "index.json"
    path.write_text(json.dumps(document, indent=2), "utf-8")
    result = zato("plugins", "list", "--available", "--index", path)
    assert result.returncode == 1, result.stdout
    assert f"plugin index {path} (--index) is not valid" in result.stderr
    assert expected in result.stderr, result.stderr
    assert "docs/plugin-index.md" in result.stderr


def test_index_that_is_not_json_names_line_and_column(tmp_path):
    path = tmp_path / "index.json"
    path.write_text('{"format": 1,\n "plugins": [,]}', "utf-8")
    result = zato("plugins", "list", "--available", "--index", path)
    assert result.returncode == 1
    assert f"plugin index {path} (--index): line 2, column 14: not JSON" in result.stderr


def test_usage_errors():
    no_index = zato("plugins", "list", "--available")
    assert no_index.returncode == 2 and "give --index PATH_OR_URL" in no_index.stderr
    index_alone = zato("plugins", "list", "--index", str(EXAMPLE))
    assert index_alone.returncode == 2 and "--index is read with --available" in index_alone.stderr
    unknown_scheme = zato("plugins", "list", "--available", "--index", "ftp://example.com/index.json")
    assert unknown_scheme.returncode == 1 and "ftp:// is not read" in unknown_scheme.stderr
