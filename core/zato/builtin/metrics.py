""" The `metrics` plugin: Prometheus metrics of requests and service invocations
(`zato.server.observability.Metrics`) at `GET /zato/metrics`.

Protection (`[metrics]` in server.conf): by default a scrape needs the admin API's credentials
(HTTP Basic Auth, as Prometheus' `basic_auth` sends them); `security = NAME` checks a security
definition instead, so Prometheus gets a credential that can do nothing else; `require_auth =
False` opens the endpoint to anyone who can reach the port (127.0.0.1 by default).

Several workers: each worker process counts what it serves, and a scrape reaches one of them.
So that every scrape reports the whole server, the supervisor points prometheus-client's
multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`) at `work/metrics/`, emptied at each start,
before it starts the workers; each worker writes its values to its own files there and a scrape
adds up all of them, those of workers that died and were restarted included, so counters never
go backwards. `multiprocess = False` keeps each worker's metrics to itself.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
import trio

from zato import hookimpl
from zato.common import SERVER_STARTUP
from zato.server.admin_auth import check_admin
from zato.server.http import HTTPError, HTTPRequest, HTTPResponse
from zato.server.observability import MULTIPROC_ENV

logger = logging.getLogger("zato.metrics")

PHASE = SERVER_STARTUP.PHASE
PATH = "/zato/metrics"
CHANNEL = "zato.metrics"  # the channel label of scrapes in the metrics and the log
MULTIPROC_DIR_NAME = "metrics"  # under the server's work/ directory


@hookimpl
def register_server_config(register):
    from zato.registry import Setting
    register("metrics", {
        "require_auth": Setting(True, doc="Whether GET /zato/metrics needs credentials"),
        "security": Setting("", doc="The security definition checked instead of the admin credentials; empty: "
                                    "the admin's"),
        "multiprocess": Setting(True, doc="One view of every worker's metrics"),
    },
             doc="GET /zato/metrics: require_auth (admin credentials, or the security definition named in "
                 "`security`); multiprocess: one view of all workers.")


_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
METRICS_OPENAPI = {"get": {
    "operationId": "metrics", "tags": ["metrics"],
    "summary": "Prometheus metrics of requests and service invocations (every worker's, added up)",
    "description": "Needs the admin credentials unless [metrics] of server.conf says otherwise: `security = NAME` "
                   "checks that security definition instead, `require_auth = False` opens it to anyone.",
    "responses": {
        "200": {"description": "The Prometheus text exposition format, or OpenMetrics if Accept asks for it",
                "content": {"text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}}}},
        "403": {"description": "The credentials do not pass the security definition of [metrics] security",
                "content": _ERROR},
        "503": {"description": "This process does not collect metrics", "content": _ERROR}}}}


@hookimpl
def register_http_routes(register):
    register(PATH, serve_metrics, openapi=METRICS_OPENAPI)


@hookimpl
def startup_phase(phase, ctx):
    if phase == PHASE.BEFORE_POST_FORK and "supervisor" in ctx.kwargs:  # several workers, in the supervisor
        config = ctx.kwargs["server_config"]
        if config.metrics.multiprocess:
            use_multiprocess_dir(ctx.kwargs["supervisor"].paths.work_dir / MULTIPROC_DIR_NAME)
    elif phase == PHASE.AFTER_POST_FORK:  # in each worker
        ctx.kwargs["server"].app.observer.enable_metrics()


def use_multiprocess_dir(directory: Path) -> None:
    """ Empties `directory` and exports it as `PROMETHEUS_MULTIPROC_DIR`, which the workers the
    supervisor starts afterwards inherit. Only files prometheus-client writes (`*.db`) are removed. """
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        path.unlink(missing_ok=True)
    previous = os.environ.get(MULTIPROC_ENV)
    if previous and Path(previous).resolve() != directory.resolve():
        logger.warning("%s=%s is replaced by %s: the server's workers share their metrics there", MULTIPROC_ENV,
                       previous, directory)
    os.environ[MULTIPROC_ENV] = str(directory)
    logger.info("metrics of all workers are added up through %s", directory)


async def serve_metrics(request: HTTPRequest) -> HTTPResponse:
    request.trace.channel = CHANNEL
    server = request.server
    settings = server.config.metrics
    if settings.require_auth:
        if settings.security:
            await server.authenticate(request, settings.security)
        else:
            await check_admin(request)
    metrics = server.app.observer.metrics
    if metrics is None:  # switched on in AFTER_POST_FORK, before the server answers; a guard for hand-made servers
        raise HTTPError(503, "Error 503 Service Unavailable: metrics are not collected in this process")
    body, content_type = await trio.to_thread.run_sync(metrics.render, request.headers.get("accept", ""))
    return HTTPResponse(200, body, content_type)

