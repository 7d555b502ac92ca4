"""The city CA's public face: its CRL at the URL every certificate names (CRL distribution point)
and its root certificate, for clients and phones to install."""
from __future__ import annotations

import asyncio

from aiohttp import web

from ..identity.ca import CRL_PATH, ROOT_PATH, CityCA, crl_url
from ..registry.ca import revoked
from .middleware import html

#: RFC 5280 4.2.1.13 / RFC 2585: a DER CRL over HTTP
CRL_TYPE = "application/pkix-crl"


class CARoutes:
    """The CRL is signed again only when the revoked set changed (or half its validity passed):
    a request costs one indexed read of the revoked rows."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.directory = ctx.config.data_path(ctx.config.ca.dir)
        self._ca: CityCA | None = None
        self._crl: tuple[tuple, float, bytes] | None = None
        self._lock = asyncio.Lock()

    def _load(self) -> CityCA | None:
        if self._ca is None and CityCA.exists(self.directory):
            self._ca = CityCA(self.directory, crl_url(self.ctx.config))
        return self._ca

    async def crl(self, request: web.Request) -> web.Response:
        ca = await self.ctx.run(self._load)
        if ca is None:
            return html(404)
        entries = tuple(await self.ctx.run_store(revoked, self.ctx.registry))
        loop = asyncio.get_running_loop()
        async with self._lock:  # one signature at a time, however many clients ask at once
            cached = self._crl
            if cached is None or cached[0] != entries or loop.time() - cached[1] > CRL_REFRESH_SECONDS:
                self._crl = cached = (entries, loop.time(), await self.ctx.run(ca.crl, entries))
        return web.Response(body=cached[2], headers={"Content-Type": CRL_TYPE, "Cache-Control": "max-age=60"})

    async def root(self, request: web.Request) -> web.Response:
        ca = await self.ctx.run(self._load)
        if ca is None:
            return html(404)
        return web.Response(body=ca.root_pem(), headers={
            "Content-Type": "application/x-pem-file",
            "Content-Disposition": f'attachment; filename="{self.ctx.config.city.domain}-root.pem"'})


#: a CRL is valid for CRL_HOURS (identity/ca.py); it is signed afresh after half of that
CRL_REFRESH_SECONDS = 12 * 3600


def add_ca_routes(app: web.Application, ctx) -> None:
    routes = CARoutes(ctx)
    app.router.add_get(CRL_PATH, routes.crl)
    app.router.add_get(ROOT_PATH, routes.root)
