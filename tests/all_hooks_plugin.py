""" Source of a test plugin that implements every hook of zato.hookspecs and records what the
core did with it. Tests install it through `PluginSite.add` (a real entry point). """

SOURCE = '''
import click
import trio

from zato import hookimpl
from zato.registry import ChannelType, Connector, Field, ObjectType, OutgoingConnectionType, RateLimiterBackend, SecurityType
from zato.server.http import HTTPError, HTTPResponse
from zato.server.notify import LocalTransport

EVENTS = []          # (what, detail) in the order things happened
NOTIFICATIONS = []
PUBLISHED = []


class Channel:
    def __init__(self, server):
        self.server = server

    def apply(self, objects):
        EVENTS.append(("channel.apply", sorted(o["name"] for o in objects)))

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        EVENTS.append(("channel.run", None))
        task_status.started()
        await trio.sleep_forever()


class RecordingTransport(LocalTransport):
    async def publish(self, message):
        PUBLISHED.append(message)


async def greet(request):
    return HTTPResponse.json({"hello": request.path_params["name"], "cid": request.cid})


def on_ping(server, payload):
    NOTIFICATIONS.append((server.pid, payload))


@hookimpl
def register_server_config(register):
    register("allhooks", {"greeting": "hi", "count": 1, "custom_transport": False})


@hookimpl
def register_object_types(register):
    register(ObjectType("allhooks_thing", (
        Field("name", required=True), Field("size", "int", default=1), Field("label", description="free text"),
        Field("enabled", "bool", default=True), Field("ratio", "float"), Field("tags", "list"),
        Field("token", secret=True), Field("security", references="security"),
    ), description="a test object type"))


@hookimpl
def register_connectors(register):
    register(Connector(ObjectType("allhooks_endpoint", (Field("name", required=True), Field("url"))),
                       OutgoingConnectionType("allhooks_conn", "allhooks_endpoint", "out.allhooks_conn",
                                              lambda server, d: object())))


@hookimpl
def register_channel_types(register):
    register(ChannelType("allhooks", "allhooks_thing", Channel, "a test channel"))


@hookimpl
def register_outgoing_connection_types(register):
    register(OutgoingConnectionType("allhooks_out", "allhooks_thing", "out.allhooks", lambda server, d: object()))


@hookimpl
def register_rate_limiter_backends(register):
    register(RateLimiterBackend("allhooks_limiter", lambda server: object()))


def check_token(definition, request):
    if request.headers.get("x-allhooks-token") != definition["token"]:
        raise HTTPError(401, headers={"www-authenticate": "AllHooks"})
    return definition["name"]


@hookimpl
def register_security_types(register):
    register(SecurityType("allhooks_token", check_token))


@hookimpl
def register_internal_services(register):
    register(SERVICES_MODULE)


@hookimpl
def register_http_routes(register):
    register("/allhooks/greet/{name}", greet, methods=("GET",))


async def mounted_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": f"mounted at {scope['root_path']}".encode()})


@hookimpl
def register_asgi_mounts(register):
    register("/allhooks-app", mounted_app)


@hookimpl
def register_cli_commands(cli):
    @cli.command("allhooks-hello")
    def hello():
        """ Says hello from the test plugin. """
        click.echo("hello from allhooks")


@hookimpl
def register_notification_handlers(register):
    register("allhooks.ping", on_ping)


@hookimpl
def register_migrations(register):
    register("allhooks", MIGRATIONS_DIR)


DELIVERED = []  # what pub/sub delivered to endpoints of type allhooks


async def deliver_to_allhooks(server, subscription, message, cid):
    DELIVERED.append(message.data)


@hookimpl
def register_pubsub_delivery_targets(register):
    register("allhooks", deliver_to_allhooks)


async def deploy_allhooks_file(server, file_name, source):
    return [file_name]


async def undeploy_allhooks_file(server, file_name):
    return [file_name]


@hookimpl
def register_deployable_files(register):
    from zato.registry import DeployableFile
    register(DeployableFile(".allhooks", deploy_allhooks_file, undeploy_allhooks_file, "allhooks files"))


@hookimpl
def register_request_attributes(register):
    register("allhooks_note", "what an allhooks channel adds")


@hookimpl
def register_service_attributes(register):
    register("allhooks_greeter", lambda service: f"greetings to {service.name}")


@hookimpl
def notification_transport(server):
    if server.config.allhooks.custom_transport:
        return RecordingTransport()
    return None


@hookimpl
def startup_phase(phase, ctx):
    EVENTS.append(("phase", phase))
    if phase == "FS_CONFIG_ONLY":
        EVENTS.append(("fs_config.greeting", ctx.kwargs["server_config"].allhooks.greeting))


@hookimpl
def register_tasks(register, server):
    async def run(*, task_status=trio.TASK_STATUS_IGNORED):
        EVENTS.append(("task.run", server.name))
        task_status.started()
        await trio.sleep_forever()
    register("ticker", run)


@hookimpl
def config_objects_changed(server, object_types):
    EVENTS.append(("config_objects_changed", tuple(object_types)))


@hookimpl
def shutdown(server):
    EVENTS.append(("shutdown", server.name))
'''

SERVICES_SOURCE = '''
from zato.server.service import Service


class Hello(Service):
    name = "allhooks.hello"

    def handle(self):
        self.response.payload = {"hello": "from allhooks", "greeter": self.allhooks_greeter,
                                 "note": self.request.allhooks_note}
'''


MIGRATION_SOURCE = '''
""" The test plugin's one table. """
import sqlalchemy as sa
from alembic import op

revision = "allhooks_0001"
down_revision = None
branch_labels = ("allhooks",)
depends_on = None


def upgrade():
    op.create_table("allhooks_note", sa.Column("id", sa.Integer, primary_key=True), sa.Column("text", sa.Text))


def downgrade():
    op.drop_table("allhooks_note")
'''


def install(site, name: str = "allhooks") -> str:
    """ Installs the plugin into `site`; returns its module name. Its migrations branch
    (`register_migrations`) creates the table `allhooks_note`. """
    import uuid
    services_module = f"allhooks_services_{uuid.uuid4().hex[:8]}"
    migrations = site.root / f"{services_module}_migrations"
    migrations.mkdir()
    (migrations / "allhooks_0001_note.py").write_text(MIGRATION_SOURCE, "utf-8")
    module = site.add(name, f"SERVICES_MODULE = {services_module!r}\nMIGRATIONS_DIR = {str(migrations)!r}\n" + SOURCE,
                      distribution="zato-plugin-allhooks", version="2.5",
                      files={f"{services_module}.py": SERVICES_SOURCE})
    site.modules.append(services_module)
    return module
