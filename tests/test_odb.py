""" The configuration database on SQLite and on a real PostgreSQL: migrations from an empty, a
populated and a pre-migration database, and the object operations. """

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text

from zato.odb import (
    CORE, HEAD_REVISION, MIGRATIONS, ODB, Change, ObjectExists, ObjectNotFound, VersionConflict, branches_of,
    installed_migrations, sqlite_url,
)
from zato.testing import admin_auth, run_server, set_config_value


def upgrade_to(url: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config
    engine = create_engine(url)
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    engine.dispose()


def test_head_revision_is_the_newest_migration_and_every_branch_s_heads_are_read_as_alembic_reads_them():
    """ HEAD_REVISION is the core's chain's head; a plugin branch's heads are read from its scripts
    without Alembic (`Branch.heads`, the cheap check at every start), and agree with Alembic's. """
    from alembic.script import ScriptDirectory
    from zato.odb import alembic_config
    assert ScriptDirectory.from_config(alembic_config(None, CORE)).get_current_head() == HEAD_REVISION
    assert CORE.heads() == {HEAD_REVISION}
    branches = branches_of(installed_migrations())
    assert {b.label for b in branches} >= {"scheduler", "rate_limit", "pubsub"}
    for branch in branches:
        script = ScriptDirectory.from_config(alembic_config(None, branch))
        assert branch.heads() == set(script.get_heads()), branch.label
        assert {r.revision for r in script.walk_revisions()}.isdisjoint({"0003", "0004", "0005"}), branch.label


def test_an_empty_database_is_migrated_to_the_newest_revision(database_url):
    odb = ODB(database_url)
    assert odb.current_revision() is None
    assert odb.upgrade().startswith(f"migrated an empty database to zato {HEAD_REVISION}, ")
    assert odb.current_revision() == HEAD_REVISION
    heads = {b.label: b.heads() for b in branches_of(installed_migrations())}
    assert odb.revisions() == {"zato": {HEAD_REVISION}, **heads}
    assert odb.upgrade().startswith(f"at revisions zato {HEAD_REVISION}, ")  # a second time does nothing
    odb.close()


def test_a_populated_older_database_is_migrated_keeping_its_objects(database_url):
    upgrade_to(database_url, "0001")
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO zato_object (type, name, is_active, data, created, updated) VALUES "
                          "('channel_rest', 'old', true, '{\"url_path\": \"/old\", \"service\": \"s\"}', "
                          "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    engine.dispose()
    odb = ODB(database_url)
    assert odb.current_revision() == "0001"
    assert f"zato from 0001 to {HEAD_REVISION}" in odb.upgrade()
    obj = odb.get_object("channel_rest", "old")
    assert obj["url_path"] == "/old" and obj["_meta"]["version"] == 1
    odb.close()


def test_a_database_made_before_migrations_existed_is_adopted(tmp_path):
    """ The first release created the table without Alembic: it is stamped 0001 and upgraded. """
    url = sqlite_url(tmp_path / "old.db")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE zato_object (id INTEGER PRIMARY KEY, type VARCHAR(200) NOT NULL, "
                          "name VARCHAR(400) NOT NULL, is_active BOOLEAN NOT NULL, data JSON NOT NULL, "
                          "created DATETIME NOT NULL, updated DATETIME NOT NULL, "
                          "CONSTRAINT uq_zato_object_type_name UNIQUE (type, name))"))
        conn.execute(text("INSERT INTO zato_object (type, name, is_active, data, created, updated) VALUES "
                          "('channel_rest', 'kept', 1, '{}', '2026-01-01', '2026-01-01')"))
    engine.dispose()
    odb = ODB(url)
    assert odb.current_revision() == "0001"
    odb.upgrade()
    assert odb.current_revision() == HEAD_REVISION and odb.get_object("channel_rest", "kept")["_meta"]["version"] == 1
    assert "ix_zato_object_type" in {i["name"] for i in inspect(odb.engine).get_indexes("zato_object")}
    odb.close()


def test_object_operations(database_url):
    odb = ODB(database_url)
    odb.upgrade()
    odb.create_object("t", "a", {"x": 1})
    with pytest.raises(ObjectExists):
        odb.create_object("t", "a", {"x": 2})
    updated = odb.update_object("t", "a", {"x": 3}, expected_version=1)
    assert updated["x"] == 3 and updated["_meta"]["version"] == 2
    with pytest.raises(VersionConflict):
        odb.update_object("t", "a", {"x": 4}, expected_version=1)
    odb.put_object("t", "b", {"x": 5, "is_active": False})
    assert [o["name"] for o in odb.list_objects("t")] == ["a"]
    assert [o["name"] for o in odb.list_objects("t", active_only=False)] == ["a", "b"]
    odb.delete_object("t", "a")
    with pytest.raises(ObjectNotFound):
        odb.get_object("t", "a")
    odb.close()


def test_a_batch_is_all_or_nothing(database_url):
    odb = ODB(database_url)
    odb.upgrade()
    odb.create_object("t", "existing", {})
    with pytest.raises(Exception):
        odb.apply([Change("create", "t", "new1", {}), Change("create", "t", "existing", {})])
    assert [o["name"] for o in odb.list_objects("t")] == ["existing"]
    assert odb.apply([Change("create", "t", "new1", {}), Change("delete", "t", "existing")]) == 2
    assert [o["name"] for o in odb.list_objects("t")] == ["new1"]
    odb.close()


async def test_a_server_on_postgresql_serves_and_changes_live(postgres, server_dir):
    url = postgres.create_database()
    set_config_value(server_dir, "odb", "url", url)
    async with run_server(server_dir) as server:
        assert server.odb.engine.dialect.name == "postgresql"
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth()) as client:
            reply = await client.post("/zato/api/objects/channel_rest",
                                      json={"name": "pg", "url_path": "/pg", "service": "demo.hello"})
            assert reply.status_code == 201
            assert (await client.get("/pg?name=pg")).json() == {"hello": "pg"}
    odb = ODB(url)
    assert odb.get_object("channel_rest", "pg")["url_path"] == "/pg"
    odb.close()
