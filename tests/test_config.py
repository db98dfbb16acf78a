""" server.conf: $ENV references, comma lists, typed keys, unknown keys with the nearest name. """

from __future__ import annotations

import pytest

from zato.config import Bunch, ConfigError, apply_schema, as_bool, read_ini
from zato.registry import ServerConfigSection

SCHEMA = [
    ServerConfigSection("main", {"host": "127.0.0.1", "port": 17010, "workers": 1, "debug": False, "ratio": 0.5,
                                 "password": "", "hosts": []}),
    ServerConfigSection("user_config", {}, free_form=True),
]


def write(tmp_path, text):
    path = tmp_path / "server.conf"
    path.write_text(text)
    return path


def test_env_reference_is_read_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ZATO_TEST_PORT", "18099")
    monkeypatch.setenv("ZATO_TEST_HOST", "10.1.2.3")
    config = read_ini(write(tmp_path, "[main]\nport = $ZATO_TEST_PORT\nhost = $ZATO_TEST_HOST\n"))
    apply_schema(config, SCHEMA)
    assert config.main.port == 18099
    assert config.main.host == "10.1.2.3"


def test_missing_env_variable_names_file_section_key_and_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("ZATO_TEST_MISSING", raising=False)
    path = write(tmp_path, "[main]\nport = 1\n\n[kvdb]\npassword = $ZATO_TEST_MISSING\n")
    with pytest.raises(ConfigError) as info:
        read_ini(path)
    message = str(info.value)
    assert str(path) in message and "[kvdb]" in message and "password" in message
    assert "ZATO_TEST_MISSING" in message and "export" in message


def test_env_reference_inside_a_list(tmp_path, monkeypatch):
    monkeypatch.setenv("ZATO_TEST_ITEM", "b")
    config = read_ini(write(tmp_path, "[main]\nhosts = a, $ZATO_TEST_ITEM, c\n"))
    assert config.main.hosts == ["a", "b", "c"]


def test_comma_values_are_lists_and_quoted_values_are_text(tmp_path):
    config = read_ini(write(tmp_path, '[user_config]\nnames = a, b ,c\nquoted = "x, y"\nsingle = one\n'))
    assert config.user_config.names == ["a", "b", "c"]
    assert config.user_config.quoted == "x, y"
    assert config.user_config.single == "one"


def test_declared_keys_are_typed_and_defaulted(tmp_path):
    config = read_ini(write(tmp_path, "[main]\nport = 1234\ndebug = yes\nratio = 0.25\nhosts = h1\n"))
    apply_schema(config, SCHEMA)
    assert config.main.port == 1234 and config.main.debug is True and config.main.ratio == 0.25
    assert config.main.hosts == ["h1"]
    assert config.main.workers == 1 and config.main.host == "127.0.0.1"


def test_declared_text_key_keeps_its_commas(tmp_path):
    config = read_ini(write(tmp_path, "[main]\npassword = a,b,c\n"))
    apply_schema(config, SCHEMA)
    assert config.main.password == "a,b,c"


def test_bad_typed_value_is_an_error_naming_the_key(tmp_path):
    config = read_ini(write(tmp_path, "[main]\nport = eighty\n"))
    with pytest.raises(ConfigError, match=r"\[main\] port = 'eighty': not an integer; allowed: an integer"):
        apply_schema(config, SCHEMA)


def test_unknown_sections_and_keys_are_warned_about_with_the_nearest_name(tmp_path):
    config = read_ini(write(tmp_path, "[main]\nwrokers = 2\nport = 1\n\n[mian]\nx = 1\n\n[user_config]\nanything = 1\n"))
    warnings = apply_schema(config, SCHEMA)
    assert any("unknown key 'wrokers' in [main]" in w and "did you mean 'workers'" in w for w in warnings)
    assert any("unknown section [mian]" in w and "did you mean 'main'" in w for w in warnings)
    assert not any("anything" in w for w in warnings)  # free-form section


def test_broken_ini_names_the_file(tmp_path):
    path = write(tmp_path, "[main\nport = 1\n")
    with pytest.raises(ConfigError, match="not a valid INI file"):
        read_ini(path)


def test_missing_file_says_how_to_create_one(tmp_path):
    with pytest.raises(ConfigError, match="quickstart"):
        read_ini(tmp_path / "nope.conf")


def test_bunch_attribute_access_and_in_place_changes():
    config = Bunch(component_enabled=Bunch())
    config.component_enabled.cassandra = True
    assert config["component_enabled"]["cassandra"] is True
    with pytest.raises(AttributeError, match="known keys: component_enabled"):
        config.nope


@pytest.mark.parametrize("value,expected", [("True", True), ("yes", True), ("1", True), (1, True), ("off", False),
                                            ("False", False), ("", False), (None, False), (False, False)])
def test_as_bool(value, expected):
    assert as_bool(value) is expected


def test_as_bool_rejects_other_words():
    with pytest.raises(ValueError):
        as_bool("maybe")
