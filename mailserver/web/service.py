"""The HTTP listeners as services of `civicmail serve` (``SERVICE_FACTORIES``)."""
from __future__ import annotations

import ipaddress
import logging

from ..config import parse_hostport
from ..server import ServerContext
from .citizen import citizen_app
from .listener import WebListener
from .metrics import metrics_app

log = logging.getLogger("civicmail.web")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_services(ctx: ServerContext) -> list:
    http = ctx.config.http
    services: list = []
    if http.listen:
        services.append(WebListener(ctx, "citizen services HTTP", "http", "http.listen", http.listen, citizen_app))
    if http.metrics:
        host, _ = parse_hostport(http.metrics_listen, "http.metrics_listen")
        if not http.metrics_token and not is_loopback(host):
            log.warning("http.metrics_listen = %s is not a loopback address and http.metrics_token is empty: "
                        "anyone who reaches it reads the metrics", http.metrics_listen)
        services.append(WebListener(ctx, "Prometheus metrics", "metrics", "http.metrics_listen", http.metrics_listen,
                                    metrics_app))
    return services


def make_worker_services(ctx: ServerContext) -> list:
    """A `serve` worker process's HTTP (workers.py): the citizens' listener on the same port as
    the first process (SO_REUSEPORT), so the portal and the sign-in use every core. The
    Prometheus listener stays in the first process."""
    http = ctx.config.http
    if not http.listen:
        return []
    return [WebListener(ctx, "citizen services HTTP", "http", "http.listen", http.listen, citizen_app)]
