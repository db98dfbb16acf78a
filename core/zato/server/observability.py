""" What the server tells about each request: a log line (cid, channel, service, status,
duration) and Prometheus metrics per channel and per service.

The log line is always written. Metrics are collected once the `metrics` plugin switches them on
(`RequestObserver.enable_metrics`, in each worker at start-up), so a server with that plugin
switched off never imports prometheus-client and pays nothing for it.

Label values are kept to bounded sets, so a scanner probing random URLs cannot grow the number
of time series: requests that no channel handled (unknown paths, wrong methods, built-in
endpoints that name no channel) are counted under `channel="-"`, and a service label is only
ever the name of a deployed service (the admin invoke endpoint takes the name from the URL).
Paths never become labels; they are in the log line.
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from contextlib import nullcontext
from time import perf_counter
from typing import Any, Callable, TypeVar

import trio

from zato.server.http import RequestTrace

logger = logging.getLogger("zato.request")

UNROUTED = "-"  # the channel and service label of requests no channel handled
REQUEST_LINE = "cid=%s %s %s channel=%s service=%s status=%d %.2f ms"  # the request log line

_this_frame = sys._getframe

# 1 ms to 10 s: where integration services' latencies fall, with the usual 1-2.5-5 steps.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


T = TypeVar("T")

# Metrics objects of features (listeners, pub/sub, plugins), made once per registry: a metric name
# can be registered on a registry only once
_feature_metrics: weakref.WeakKeyDictionary[Any, dict[Callable, Any]] = weakref.WeakKeyDictionary()


def feature_metrics(server: Any, make: Callable[[Any], T], off: T) -> T:
    """ The metrics a feature adds to this process's Prometheus registry: `make(metrics)` (it
    registers its counters on `metrics.registry`), made once per registry, or `off` (an object
    with the same methods doing nothing) while metrics are off. The one way features add metrics. """
    metrics = getattr(getattr(getattr(server, "app", None), "observer", None), "metrics", None)
    if metrics is None:
        return off
    made = _feature_metrics.setdefault(metrics, {})
    found = made.get(make)
    if found is None:
        found = made[make] = make(metrics)
    return found


class Metrics:
    """ The Prometheus metrics of one worker process.

    `zato_http_requests_total{channel, service, status}` and
    `zato_http_request_duration_seconds{channel, service}` count and time every HTTP request;
    `zato_service_invocations_total{service, outcome}` and `zato_service_duration_seconds{service}`
    every service invocation, whatever started it (a channel, another service, the scheduler).

    With `PROMETHEUS_MULTIPROC_DIR` set (the `metrics` plugin sets it for servers with several
    workers) values live in files shared by the workers and `render` adds up every worker's.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, values

        # `*_created` series would double the number of series, and multiprocess mode has none:
        # without them both modes show the same. (A process-wide switch; the server owns the process.)
        disable_created_metrics()
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        if self.multiprocess_dir and values.ValueClass is values.MutexValue:
            logger.warning("%s is set but prometheus-client was imported before it was: this worker's metrics are "
                           "its own, not shared with other workers", MULTIPROC_ENV)
            self.multiprocess_dir = None
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "zato_http_requests", "HTTP requests by channel, service and status code ('-': no channel handled it)",
            ("channel", "service", "status"), registry=self.registry)
        self.request_duration = Histogram(
            "zato_http_request_duration_seconds", "HTTP request duration, from its headers read to the reply sent",
            ("channel", "service"), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.invocations = Counter(
            "zato_service_invocations", "Service invocations by outcome (ok, error, timeout, cancelled)",
            ("service", "outcome"), registry=self.registry)
        self.invocation_duration = Histogram(
            "zato_service_duration_seconds", "Time spent in a service's handler (before_handle to after_handle)",
            ("service",), buckets=LATENCY_BUCKETS, registry=self.registry)
        # Label children by their values: a dict lookup is several times cheaper than .labels()
        self._request_counts: dict[tuple[str, str, int], Any] = {}
        self._request_times: dict[tuple[str, str], Any] = {}
        self._invocation_counts: dict[tuple[str, str], Any] = {}
        self._invocation_times: dict[str, Any] = {}

    def observe_request(self, channel: str, service: str, status: int, seconds: float) -> None:
        count = self._request_counts.get((channel, service, status))
        if count is None:
            count = self._request_counts[(channel, service, status)] = self.requests.labels(channel, service, str(status))
        count.inc()
        timing = self._request_times.get((channel, service))
        if timing is None:
            timing = self._request_times[(channel, service)] = self.request_duration.labels(channel, service)
        timing.observe(seconds)

    def observe_invocation(self, service: str, outcome: str, seconds: float) -> None:
        count = self._invocation_counts.get((service, outcome))
        if count is None:
            count = self._invocation_counts[(service, outcome)] = self.invocations.labels(service, outcome)
        count.inc()
        timing = self._invocation_times.get(service)
        if timing is None:
            timing = self._invocation_times[service] = self.invocation_duration.labels(service)
        timing.observe(seconds)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """ (body, content type) of a scrape: the Prometheus text format, or OpenMetrics if `accept`
        asks for it. In multiprocess mode every worker's values, added up. Reads files in that mode:
        call it from a worker thread. """
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept)
        registry = self.registry
        if self.multiprocess_dir:
            from prometheus_client import CollectorRegistry
            from prometheus_client.multiprocess import MultiProcessCollector
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
        return encoder(registry), content_type


class _ServiceTimer:
    """ Times one service invocation and counts its outcome. """
    __slots__ = ("metrics", "service", "started")

    def __init__(self, metrics: Metrics, service: str) -> None:
        self.metrics = metrics
        self.service = service

    def __enter__(self) -> None:
        self.started = perf_counter()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            outcome = "ok"
        elif issubclass(exc_type, trio.TooSlowError):
            outcome = "timeout"
        elif issubclass(exc_type, trio.Cancelled):
            outcome = "cancelled"
        else:
            outcome = "error"
        self.metrics.observe_invocation(self.service, outcome, perf_counter() - self.started)
        return False


_NOT_TIMED = nullcontext()


class RequestObserver:
    """ Called by the ASGI app after every reply; times service invocations for the server. """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.metrics: Metrics | None = None

    def enable_metrics(self) -> Metrics:
        """ Starts collecting Prometheus metrics in this process (idempotent). """
        if self.metrics is None:
            self.metrics = Metrics()
        return self.metrics

    def __call__(self, trace: RequestTrace, method: str, path: str, status: int, seconds: float, cid: str) -> None:
        channel = trace.channel or UNROUTED
        service = trace.service or UNROUTED
        if logger.isEnabledFor(logging.INFO):  # nothing is built for a level that is off
            # What logger.info(REQUEST_LINE, ...) makes, less its walk up the stack for the caller
            # (Logger.findCaller): the caller is this frame
            code = _this_frame().f_code
            logger.handle(logger.makeRecord(logger.name, logging.INFO, code.co_filename, _this_frame().f_lineno,
                                            REQUEST_LINE, (cid, method, path, channel, service, status,
                                                           seconds * 1000), None, code.co_name))
        metrics = self.metrics
        if metrics is not None:
            if service not in self.server.services.entries:
                service = UNROUTED  # a name taken from a URL, not a deployed service: never a label
            metrics.observe_request(channel, service, status, seconds)

    def time_service(self, name: str) -> Any:
        """ A context manager around a service's handler: counts the invocation by outcome and
        observes its duration (a shared no-op while metrics are off). """
        metrics = self.metrics
        if metrics is None:
            return _NOT_TIMED
        return _ServiceTimer(metrics, name)
