"""``GET /metrics`` on the metrics listener: Prometheus's text format from this server's registry
(mailserver/metrics.py), behind an optional bearer token (``http.metrics_token``)."""
from __future__ import annotations

import hmac

from aiohttp import web

from ..metrics import CONTENT_TYPE_LATEST
from .middleware import guard

#: a scrape is a GET: no body is read
MAX_BODY = 1024


def metrics_app(ctx) -> web.Application:
    token = ctx.config.http.metrics_token
    expected = f"Bearer {token}".encode("utf-8")

    async def scrape(request: web.Request) -> web.Response:
        if token:
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, expected):
                return web.Response(status=401, text="401: a bearer token is required\n",
                                    headers={"WWW-Authenticate": 'Bearer realm="civicmail metrics"'})
        body = await ctx.metrics.scrape(ctx)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})

    app = web.Application(client_max_size=MAX_BODY, middlewares=[guard(ctx, "metrics")])
    app.router.add_get("/metrics", scrape)
    return app
