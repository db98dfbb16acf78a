""" The `bst` plugin: business state transitions, as Zato's BST.

* Definitions are configuration objects of type `bst_definition` (name, text, description,
  is_active): the admin API, enmasse (`bst_definition:`) and `.bst` files deployed like services
  (pickup/, `zato deploy`), parsed by `zato_plugin_bst.definitions`.
* Each object's state and the history of its transitions live in two tables of the configuration
  database, the Alembic branch `bst` (`zato_plugin_bst.store`, `migrations/`).
* Services move objects with `transition_to` (`zato_plugin_bst.api`, re-exported by `zato_bst`).
* The REST API is the internal services `zato.bst.*` (`zato_plugin_bst.services`), exposed through
  REST channels like any other service (`rest_channels.yaml`).

Nothing heavy is imported here: the parser, the store and the services load on first use.
"""

from __future__ import annotations

from pathlib import Path

from zato.plugin_api import hookimpl

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
REST_CHANNELS = Path(__file__).resolve().parent / "rest_channels.yaml"


@hookimpl
def register_object_types(register):
    from zato_plugin_bst.definitions import BST_DEFINITION
    register(BST_DEFINITION)


@hookimpl
def register_deployable_files(register):
    from zato_plugin_bst.definitions import DEPLOYABLE
    register(DEPLOYABLE)


@hookimpl
def register_migrations(register):
    register("bst", MIGRATIONS)


@hookimpl
def register_internal_services(register):
    register("zato_plugin_bst.services")


@hookimpl
def shutdown(server):
    from zato_plugin_bst.api import STORE
    STORE.clear(server)  # the engine is the server's own (server.odb), closed by the core
