""" From a definition to create_engine's arguments, with no database: engine names, the URL
built from parts, the query string on db_name, `extra` typed and checked against what
SQLAlchemy really accepts. """

from __future__ import annotations

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool, StaticPool

from zato_plugin_sql import SQLConfigError, check_definition, engine_settings, parse_extra, valid_engine_arguments


def settings(**fields):
    return engine_settings({"name": "t", **fields})


def test_engine_names_map_to_sqlalchemy_drivers_and_full_names_pass_through():
    assert settings(engine="postgresql").drivername == "postgresql+psycopg"
    assert settings(engine="Postgres").drivername == "postgresql+psycopg"
    assert settings(engine="mysql").drivername == "mysql+pymysql"
    assert settings(engine="oracle").drivername == "oracle+oracledb"
    assert settings(engine="mssql").drivername == "mssql+pymssql"
    assert settings(engine="sqlite").drivername == "sqlite"
    assert settings(engine="postgresql+pg8000").drivername == "postgresql+pg8000"  # as Zato stored it


def test_unknown_and_asyncio_engines_are_refused_naming_what_works():
    with pytest.raises(SQLConfigError) as info:
        settings(engine="db2000")
    assert info.value.errors[0]["field"] == "engine"
    assert "unknown engine 'db2000': use one of postgresql, mysql, mariadb, oracle, mssql, sqlite" in str(info.value)
    with pytest.raises(SQLConfigError, match="asyncio driver; use a blocking one"):
        settings(engine="postgresql+asyncpg")
    with pytest.raises(SQLConfigError, match="engine: missing"):
        settings(engine="")


def test_the_url_is_built_from_parts_so_any_password_works_and_is_never_shown():
    password = "p@ss:w/rd?#&=%"
    built = settings(engine="postgresql", host="db.local", port=5433, username="crm", password=password,
                     db_name="crm")
    assert built.url.password == password and built.url.username == "crm"
    assert (built.url.host, built.url.port, built.url.database) == ("db.local", 5433, "crm")
    assert password not in built.safe_url and "***" in built.safe_url
    assert password not in repr(built.url)
    # What the driver gets is the password itself, not a URL-quoted form of it
    assert built.url.translate_connect_args()["password"] == password


def test_the_query_string_on_db_name_becomes_driver_options():
    built = settings(engine="mysql", host="h", db_name="mydb?charset=utf8")
    assert built.url.database == "mydb" and dict(built.url.query) == {"charset": "utf8"}
    built = settings(engine="oracle", host="h", db_name="?service_name=MYDB")  # a service name alone
    assert built.url.database is None and dict(built.url.query) == {"service_name": "MYDB"}
    built = settings(engine="postgresql", db_name="db?options=-c%20search_path%3Dcrm&application_name=a&x=1&x=2")
    assert dict(built.url.query) == {"options": "-c search_path=crm", "application_name": "a", "x": ("1", "2")}
    errors = check_definition({"name": "t", "engine": "postgresql", "db_name": "db?charset"})
    assert errors and errors[0]["field"] == "db_name"


def test_sqlite_paths_are_relative_to_the_server_directory(tmp_path):
    built = engine_settings({"name": "t", "engine": "sqlite", "db_name": "work/app.db?mode=ro&uri=true",
                             "host": "ignored"}, tmp_path)
    assert built.url.database == str(tmp_path / "work" / "app.db") and built.url.host is None
    assert dict(built.url.query) == {"mode": "ro", "uri": "true"}
    assert engine_settings({"name": "t", "engine": "sqlite", "db_name": "/abs/app.db"}, tmp_path).url.database == \
        "/abs/app.db"


def test_extra_values_are_typed():
    arguments, problems = parse_extra(
        "echo=True\nmax_overflow=5\npool_recycle=3600 \npool_timeout=2.5\n# a comment\n\n"
        "hide_parameters=false\nisolation_level=REPEATABLE READ\nexecution_options={'stream_results': True}\n"
        "connect_args={'options': '-c a=b;c'}; logging_name=none\necho_pool='debug'")
    assert problems == []
    assert arguments == {"echo": True, "max_overflow": 5, "pool_recycle": 3600, "pool_timeout": 2.5,
                         "hide_parameters": False, "isolation_level": "REPEATABLE READ",
                         "execution_options": {"stream_results": True}, "connect_args": {"options": "-c a=b;c"},
                         "logging_name": None, "echo_pool": "debug"}
    assert type(arguments["max_overflow"]) is int and arguments["echo"] is True


def test_extra_lines_that_are_not_key_value_are_named_by_line():
    arguments, problems = parse_extra("echo=True\njust words\nconnect_args={'a': 1\n=5")
    assert arguments == {"echo": True}
    assert problems[0] == "line 2: 'just words' is not key=value (e.g. echo=True)"
    assert problems[1].startswith("line 3: connect_args: {'a': 1 starts like a Python literal but is not one")
    assert problems[2].startswith("line 4: '=5' is not key=value")


def test_invalid_extra_keys_are_refused_with_the_list_of_valid_ones():
    with pytest.raises(SQLConfigError) as info:
        settings(engine="postgresql", extra="echo=True\nmax_overflw=5\npool_size=3")
    errors = info.value.errors
    assert [e["field"] for e in errors] == ["extra", "extra"]
    assert errors[0]["error"].startswith("'max_overflw' is not a create_engine argument for postgresql+psycopg "
                                         "with QueuePool; valid keys: ")
    listed = errors[0]["error"].split("valid keys: ")[1].split(", ")
    assert {"echo", "max_overflow", "isolation_level", "pool_recycle", "connect_args", "client_encoding"} <= set(listed)
    assert "pool_size" not in listed  # a field of its own
    assert errors[1]["error"] == "pool_size is a field of its own; set it there, not in extra"
    # The pool decides too: NullPool keeps nothing, so it takes no max_overflow
    with pytest.raises(SQLConfigError, match="'max_overflow' is not a create_engine argument for sqlite with NullPool"):
        settings(engine="sqlite", db_name="x.db", pool_size=0, extra="max_overflow=2")
    with pytest.raises(SQLConfigError, match="poolclass=Nope: not a pool class; use one of .*NullPool"):
        settings(engine="sqlite", extra="poolclass=Nope")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("drivername,poolclass", [("postgresql+psycopg", None), ("sqlite", None),
                                                  ("sqlite", NullPool), ("sqlite", StaticPool)])
def test_every_key_listed_as_valid_is_accepted_by_create_engine_and_others_are_not(drivername, poolclass):
    """ The list comes from SQLAlchemy's classes; create_engine itself is the judge. A value of
    the wrong type may be refused, but never the key ("Invalid argument(s)"). """
    url = URL.create(drivername, database="x.db" if drivername == "sqlite" else "x")
    base = {"poolclass": poolclass} if poolclass else {}
    valid = valid_engine_arguments(url, poolclass)
    assert len(valid) > 15
    for key in sorted(valid - {"poolclass"}):
        try:
            create_engine(url, **base, **{key: _sample(key)}).dispose()
        except TypeError as exc:
            assert "Invalid argument" not in str(exc), (key, exc)
        except Exception:
            pass  # the key was taken; only its sample value was not to the dialect's liking
    with pytest.raises(TypeError, match="Invalid argument"):
        create_engine(url, **base, max_overflw=1)


def _sample(key):
    return {"connect_args": {}, "execution_options": {}, "isolation_level": "SERIALIZABLE", "echo": False,
            "echo_pool": False, "logging_name": "x", "pool_logging_name": "x", "paramstyle": "named",
            "client_encoding": "utf8", "pool_reset_on_return": "rollback"}.get(key, 1)


def test_pool_size_zero_keeps_no_connection_and_the_pool_size_field_reaches_the_pool():
    assert settings(engine="postgresql", pool_size=0).kwargs["poolclass"] is NullPool
    built = settings(engine="postgresql", pool_size=7, extra="max_overflow=3")
    assert built.kwargs["pool_size"] == 7 and built.kwargs["max_overflow"] == 3 and built.kwargs["pool_pre_ping"]
    assert built.concurrency == 10
    assert settings(engine="postgresql", pool_size=4, extra="max_overflow=-1").concurrency == 64  # unbounded
    assert settings(engine="postgresql").kwargs["pool_size"] == 5
    assert settings(engine="sqlite", db_name="a.db", extra="poolclass=StaticPool").concurrency == 1
    with pytest.raises(SQLConfigError, match="pool_size: expected 0 or more connections, got -1"):
        settings(engine="postgresql", pool_size=-1)
    with pytest.raises(SQLConfigError, match=r"port: expected a TCP port \(1-65535\), got 70000"):
        settings(engine="postgresql", port=70000)


def test_every_problem_is_listed_at_once():
    errors = check_definition({"name": "t", "engine": "postgresql", "pool_size": "big", "port": "x",
                               "extra": "nope\nbad_key=1"})
    assert [e["field"] for e in errors] == ["pool_size", "extra", "port", "extra"]
    assert check_definition({"name": "t", "engine": "postgresql", "extra": "echo=True"}) == []


def test_the_object_type_check_leaves_environment_references_to_the_build():
    from zato_plugin_sql import check_object
    assert check_object({"name": "t", "engine": "postgresql", "port": "$DB_PORT", "extra": "$DB_EXTRA"}) == []
    # With the engine from the environment, only the lines themselves can be read
    assert check_object({"name": "t", "engine": "$DB_ENGINE", "extra": "max_overflw=1"}) == []
    assert check_object({"name": "t", "engine": "$DB_ENGINE", "extra": "oops"})[0]["error"].startswith("line 1: 'oops'")
    # A partial change without the engine: the same
    assert check_object({"name": "t", "extra": "pool_size=1"}, partial=True) == [
        {"field": "extra", "error": "pool_size is a field of its own; set it there, not in extra"}]
    assert check_object({"name": "t", "engine": "sqlite", "extra": "max_overflw=1"}, partial=True)[0]["error"] \
        .startswith("'max_overflw' is not a create_engine argument for sqlite")
