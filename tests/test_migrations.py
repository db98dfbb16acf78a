""" Plugins' own tables (`register_migrations`): the built-ins' branches, databases made by the
old single chain (revisions 0001-0005, kept verbatim in tests/legacy_migrations) stamped with
every row kept, plugins switched off and on again, and a third-party plugin bringing a table, on
SQLite and a real PostgreSQL. """

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

import all_hooks_plugin
from zato.config import ConfigError
from zato.odb import HEAD_REVISION, ODB, branches_of, installed_migrations
from zato.plugins import PluginLoadError, load_plugins
from zato.registry import Kind, RegistrationError
from zato.testing import ServerProcess, create_test_server_dir, run_server, set_config_value

LEGACY = Path(__file__).resolve().parent / "legacy_migrations"

# What the old chain's revisions created, and one row for each of those tables.
LEGACY_ROWS = {
    "0001": [
        "INSERT INTO zato_object (id, type, name, is_active, data, created, updated) VALUES "
        "(1, 'scheduler', 'job1', true, '{\"service\": \"demo.hello\"}', '2026-01-02 03:04:05', '2026-01-02 03:04:05')",
    ],
    "0003": [
        "INSERT INTO zato_scheduler_lease (name, holder, epoch, acquired, expires) VALUES "
        "('scheduler', 'host:1', 7, '2026-01-02 03:04:05', '2026-01-02 03:04:35')",
        "INSERT INTO zato_scheduler_state (job_id, schedule_key, next_due, runs, updated) VALUES "
        "(1, 'k1', '2026-01-02 03:05:00', 3, '2026-01-02 03:04:05')",
        "INSERT INTO zato_scheduler_run (id, job_id, job_name, kind, due_time, missed, cid, requested, outcome) "
        "VALUES (1, 1, 'job1', 'scheduled', '2026-01-02 03:04:00', 0, 'cid-1', '2026-01-02 03:04:00', 'ok')",
    ],
    "0004": [
        "INSERT INTO zato_rate_limit_counter (key, window_start, hits, expires_at) VALUES "
        "('channel_rest:a:digest:0', 1700000000, 5, 1700000060)",
    ],
    "0005": [
        "INSERT INTO zato_pubsub_message (id, msg_id, topic_name, data, data_format, mime_type, size, priority, "
        "pub_time, expiration, expiration_time, has_gd) VALUES (1, 'm1', '/t', '\"x\"', 'json', 'application/json', "
        "3, 5, 1700000000.5, 0, 1800000000.0, true)",
        "INSERT INTO zato_pubsub_delivery (id, msg_id, sub_key, topic_name, priority, pub_time, expiration_time) "
        "VALUES (1, 'm1', 'sk1', '/t', 5, 1700000000.5, 1800000000.0)",
        "INSERT INTO zato_pubsub_dead_letter (id, msg_id, sub_key, topic_name, message, delivery_count, dead_at) "
        "VALUES (1, 'm0', 'sk1', '/t', '{}', 9, 1700000001.0)",
        "INSERT INTO zato_pubsub_topic_state (topic_name, last_msg_id, unrouted_count, routed_count) "
        "VALUES ('/t', 'm1', 2, 1)",
    ],
}
# The branches of the built-in plugins and of the plugins installed with this repository that have tables
BUILTIN_HEADS = {"scheduler": {"scheduler_0002"}, "rate_limit": {"rate_limit_0001"}, "pubsub": {"pubsub_0001"},
                 "wsx": {"wsx_0003"}, "bst": {"bst_0001"}}
# the tables of the plugins installed with this repository, new to every old database
PLUGIN_TABLES = {"zato_wsx_connection", "zato_wsx_reply", "zato_wsx_request", "zato_wsx_outgoing",
                 "zato_wsx_subscription", "zato_bst_state", "zato_bst_history"}


def legacy_database(url: str, revision: str) -> dict[str, list]:
    """ Makes the database as the code before the branches made it (the old chain up to
    `revision`), with a row in every table; returns every table's rows. """
    from alembic import command
    from alembic.config import Config
    engine = create_engine(url)
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(LEGACY))
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        for made_by, statements in LEGACY_ROWS.items():
            if made_by <= revision:
                for statement in statements:
                    conn.execute(text(statement))
        assert set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars()) == {revision}
    engine.dispose()
    return snapshot(url)


def snapshot(url: str) -> dict[str, list]:
    engine = create_engine(url)
    with engine.connect() as conn:
        tables = sorted(t for t in inspect(conn).get_table_names() if t.startswith("zato_"))
        rows = {t: sorted(map(tuple, conn.execute(text(f"SELECT * FROM {t}")).all()), key=repr) for t in tables}
    engine.dispose()
    return rows


def tables_of(url: str) -> set[str]:
    engine = create_engine(url)
    names = set(inspect(engine).get_table_names())
    engine.dispose()
    return names


@pytest.mark.parametrize("old_revision", ["0003", "0004", "0005"])
def test_a_database_of_the_old_chain_is_stamped_keeping_every_row(database_url, old_revision):
    before = legacy_database(database_url, old_revision)
    odb = ODB(database_url)
    done = odb.upgrade()
    assert f"adopted from the core's old revision {old_revision}, every row kept" in done
    assert odb.revisions() == {"zato": {HEAD_REVISION}, **BUILTIN_HEADS}
    after = snapshot(database_url)
    # The scheduler's lease moved to the core's zato_lease (scheduler_0002), its row with it
    assert "zato_scheduler_lease" not in after and after["zato_lease"] == before.pop("zato_scheduler_lease")
    assert {table: after[table] for table in before} == before  # the same rows, nothing rebuilt
    assert set(after) - set(before) == {"zato_lease"} | {  # the branches the old revision did not have yet, created
        "0003": {"zato_rate_limit_counter", "zato_pubsub_message", "zato_pubsub_delivery",
                 "zato_pubsub_dead_letter", "zato_pubsub_topic_state"},
        "0004": {"zato_pubsub_message", "zato_pubsub_delivery", "zato_pubsub_dead_letter", "zato_pubsub_topic_state"},
        "0005": set(),
    }[old_revision] | PLUGIN_TABLES
    assert odb.upgrade().startswith(f"at revisions zato {HEAD_REVISION}, ")
    assert odb.get_object("scheduler", "job1")["service"] == "demo.hello"
    odb.close()


def test_an_old_database_is_stamped_for_a_plugin_switched_off_and_kept_until_it_is_on_again(database_url):
    before = legacy_database(database_url, "0005")
    odb = ODB(database_url)
    builtin = {k: v for k, v in installed_migrations().items() if k not in ("wsx", "bst")}  # the old chain's branches
    enabled = {k: v for k, v in builtin.items() if k != "pubsub"}
    odb.upgrade(enabled)
    assert odb.revisions({}) == {"zato": {HEAD_REVISION}}
    assert odb.revisions()["pubsub"] == {"pubsub_0001"}  # stamped: its tables are there
    before["zato_lease"] = before.pop("zato_scheduler_lease")  # the scheduler's lease row moved to the core's table
    assert snapshot(database_url) == before
    assert odb.upgrade(builtin).startswith("at revisions")  # switched on again: nothing to do, nothing lost
    assert snapshot(database_url) == before
    odb.close()


def test_a_plugin_switched_off_keeps_its_tables_and_is_upgraded_when_switched_on(database_url):
    odb = ODB(database_url)
    only_scheduler = {"scheduler": installed_migrations()["scheduler"]}
    odb.upgrade(only_scheduler)
    assert "zato_scheduler_run" in tables_of(database_url) and "zato_pubsub_message" not in tables_of(database_url)
    assert odb.revisions() == {"zato": {HEAD_REVISION}, "scheduler": {"scheduler_0002"},
                               "rate_limit": set(), "pubsub": set(), "wsx": set(), "bst": set()}
    assert "rate_limit from nothing to rate_limit_0001" in odb.upgrade()  # switched on: its branch runs
    engine = create_engine(database_url)
    with engine.begin() as conn:
        for statement in LEGACY_ROWS["0003"] + LEGACY_ROWS["0005"]:  # the lease row: in the core's table now
            conn.execute(text(statement.replace("zato_scheduler_lease", "zato_lease")))
    engine.dispose()
    before = snapshot(database_url)
    assert odb.upgrade({}) == f"at revisions zato {HEAD_REVISION}"  # every plugin off: nothing touched
    assert snapshot(database_url) == before
    odb.close()


def test_a_branch_stamped_by_a_newer_version_of_its_plugin_is_refused_naming_it(tmp_path):
    from zato.odb import sqlite_url
    url = sqlite_url(tmp_path / "z.db")
    odb = ODB(url)
    odb.upgrade()
    with odb.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version_pubsub SET version_num = 'pubsub_0009'"))
    with pytest.raises(ConfigError) as caught:
        odb.upgrade()
    message = str(caught.value)
    for part in ("branch 'pubsub'", "alembic_version_pubsub", "pubsub_0009", "install that version again"):
        assert part in message
    odb.close()


def test_an_old_database_missing_some_of_a_revision_s_tables_is_refused_not_rebuilt(tmp_path):
    from zato.odb import sqlite_url
    url = sqlite_url(tmp_path / "z.db")
    legacy_database(url, "0005")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE zato_pubsub_topic_state"))
    engine.dispose()
    with pytest.raises(ConfigError) as caught:
        ODB(url).upgrade()
    assert "old revision 0005" in str(caught.value) and "zato_pubsub_topic_state are missing" in str(caught.value)
    assert set(create_engine(url).connect().execute(text("SELECT version_num FROM alembic_version")).scalars()) == \
        {"0005"}  # nothing was changed


# ################################################################################################
# A third-party plugin's own branch

BST_SOURCE = '''
from pathlib import Path
from zato import hookimpl

@hookimpl
def register_migrations(register):
    register("bst", Path(__file__).resolve().parent / "bst_migrations")
'''

BST_REVISIONS = {
    "bst_0001_states.py": '''
        import sqlalchemy as sa
        from alembic import op

        revision = "bst_0001"
        down_revision = None
        branch_labels = ("bst",)
        depends_on = None

        def upgrade():
            op.create_table("bst_state", sa.Column("id", sa.Integer, primary_key=True),
                            sa.Column("object_id", sa.Integer, nullable=False))

        def downgrade():
            op.drop_table("bst_state")
    ''',
    # a later release adds a column: a database made by the first one is upgraded, not rebuilt
    "bst_0002_label.py": '''
        import sqlalchemy as sa
        from alembic import op

        revision: str = "bst_0002"
        down_revision: str = "bst_0001"
        branch_labels = None
        depends_on = None

        def upgrade():
            with op.batch_alter_table("bst_state") as batch:
                batch.add_column(sa.Column("label", sa.String(100), nullable=True))

        def downgrade():
            with op.batch_alter_table("bst_state") as batch:
                batch.drop_column("label")
    ''',
}


def install_bst(plugin_site, revisions=("bst_0001_states.py", "bst_0002_label.py")) -> None:
    directory = plugin_site.root / "bst_migrations"
    directory.mkdir(exist_ok=True)
    for name in revisions:
        (directory / name).write_text(textwrap.dedent(BST_REVISIONS[name]), "utf-8")
    if not any(plugin_site.root.glob("zato_plugin_bst-*.dist-info")):
        plugin_site.add("bst", BST_SOURCE)


def test_a_plugin_registers_its_branch_and_upgrade_creates_then_upgrades_its_table(plugin_site, database_url):
    install_bst(plugin_site, ["bst_0001_states.py"])
    loaded = load_plugins({})
    assert loaded.registry.plugin_of(Kind.MIGRATIONS, "bst") == "bst"
    assert "register_migrations" in next(p for p in loaded.plugins if p.name == "bst").hooks
    odb = ODB(database_url)
    assert ", bst bst_0001, " in odb.upgrade(loaded.registry.items(Kind.MIGRATIONS))  # an empty database
    odb.engine.dispose()
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO bst_state (id, object_id) VALUES (1, 42)"))
    engine.dispose()
    install_bst(plugin_site)  # the plugin's next release
    (branch,) = branches_of({"bst": loaded.registry.items(Kind.MIGRATIONS)["bst"]})
    assert branch.heads() == {"bst_0002"}  # annotated assignments are read too
    assert "bst from bst_0001 to bst_0002" in odb.upgrade(load_plugins({}).registry.items(Kind.MIGRATIONS))
    assert snapshot(database_url)["zato_object"] == []
    engine = create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, object_id, label FROM bst_state")).all() == [(1, 42, None)]
    engine.dispose()
    odb.close()


@pytest.mark.parametrize("label, directory, expected", [
    ("Bad-Label", "here", "branch_label 'Bad-Label' must be 1-40 characters"),
    ("zato", "here", "branch_label 'zato' is the core's own chain"),
    ("ok", "missing", "does not exist; give the directory that holds the branch's Alembic revision scripts"),
])
def test_a_malformed_registration_stops_loading_naming_the_plugin(plugin_site, label, directory, expected):
    (plugin_site.root / "here").mkdir(exist_ok=True)
    plugin_site.add("badbranch", f'''
        from pathlib import Path
        from zato import hookimpl

        @hookimpl
        def register_migrations(register):
            register({label!r}, Path(__file__).resolve().parent / {directory!r})
    ''')
    with pytest.raises((RegistrationError, PluginLoadError)) as caught:
        load_plugins({})
    assert "plugin 'badbranch'" in str(caught.value) and expected in str(caught.value)


def test_two_plugins_cannot_register_the_same_branch(plugin_site):
    install_bst(plugin_site)
    plugin_site.add("bst2", BST_SOURCE.replace("bst_migrations", "."))
    with pytest.raises(RegistrationError) as caught:
        load_plugins({})
    assert "migrations: 'bst' is registered by plugin" in str(caught.value)


async def test_a_server_migrates_the_branches_of_its_enabled_plugins_only(plugin_site, server_dir):
    from zato.odb import sqlite_url
    install_bst(plugin_site)
    all_hooks_plugin.install(plugin_site)
    set_config_value(server_dir, "odb", "url", sqlite_url(server_dir / "work" / "new.db"))  # not quickstart's
    set_config_value(server_dir, "plugins", "bst", "False")
    set_config_value(server_dir, "plugins", "pubsub", "False")
    async with run_server(server_dir) as server:
        tables = set(inspect(server.odb.engine).get_table_names())
        assert "allhooks_note" in tables and "zato_scheduler_run" in tables
        assert "bst_state" not in tables and "zato_pubsub_message" not in tables
        assert server.registry.plugin_of(Kind.MIGRATIONS, "allhooks") == "allhooks"


def test_a_supervisor_migrates_once_before_its_workers_start(plugin_site, tmp_path):
    """ `[main] workers = 2`: the supervisor upgrades the database of a legacy server (old chain
    at 0005, a row in every table) before forking; the workers find it current. """
    install_bst(plugin_site)
    base = create_test_server_dir(tmp_path / "server", workers=2, main={"graceful_timeout": 3})
    from zato.odb import sqlite_url
    url = sqlite_url(base / "work" / "legacy.db")
    before = legacy_database(url, "0005")
    set_config_value(base, "odb", "url", url)
    set_config_value(base, "plugins", "rate_limit", "False")
    server = ServerProcess(base).start(timeout=60)
    try:
        output = server.output()
    finally:
        server.stop()
    assert output.count("adopted from the core's old revision 0005") == 1, output  # once: by the supervisor
    after = snapshot(url)
    lease = before.pop("zato_scheduler_lease")[0]
    assert "zato_scheduler_lease" not in after  # moved to the core's zato_lease (scheduler_0002)
    moved = [row for row in after.pop("zato_lease") if row[0] == "scheduler"][0]
    assert moved[2] == lease[2] + 1  # the row was kept: the new leader took it over
    assert {table: after[table] for table in before} == before and "bst_state" in tables_of(url)
    odb = ODB(url)
    assert odb.revisions() == {"zato": {HEAD_REVISION}, **BUILTIN_HEADS, "bst": {"bst_0002"}}
    odb.close()
