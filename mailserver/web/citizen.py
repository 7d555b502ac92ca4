"""The citizens' routes: autoconfig, Apple's profile, one-click unsubscribe (their documents and
pages are in services/http.py); with the OpenID Connect provider, the provider and the portal
(web/oidc.py, web/portal.py)."""
from __future__ import annotations

import urllib.parse
from pathlib import Path

from aiohttp import web

from ..services.http import (AUTOCONFIG_PATHS, MOBILECONFIG_TYPE, UNSUBSCRIBE_MAX_BODY, UNSUBSCRIBE_ROUTE,
                             autoconfig_xml, mobileconfig, page, profile_address)
from ..services.topics import one_click_topic, one_click_unsubscribe
from .ca import add_ca_routes
from .middleware import guard, html


class CitizenRoutes:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.autoconfig_text = autoconfig_xml(ctx.config)  # the configuration is frozen

    async def autoconfig(self, request: web.Request) -> web.Response:
        return web.Response(text=self.autoconfig_text, content_type="application/xml", charset="utf-8")

    async def mobileconfig(self, request: web.Request) -> web.Response:
        """``/mobileconfig?emailaddress=ADDRESS``: the profile, for any address of the city's
        domains (like autoconfig, it does not tell whether the mailbox exists)."""
        address = profile_address(self.config, request.query.get("emailaddress", ""))
        if address is None:
            return html(400)
        body = mobileconfig(self.config, address)
        if body is None:
            return html(404)
        return web.Response(body=body, headers={
            "Content-Type": MOBILECONFIG_TYPE,
            "Content-Disposition": f'attachment; filename="{self.config.city.domain}.mobileconfig"'})

    async def unsubscribe(self, request: web.Request) -> web.Response:
        m = request.match_info
        if request.method in ("GET", "HEAD"):  # a person, or a link scanner: never unsubscribes
            topic = await self.ctx.run_store(one_click_topic, self.ctx.registry, m["topic"], int(m["account"]),
                                             m["token"])
            return html(200, page(200, action=request.path, topic=topic)) if topic is not None else html(404)
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD", "POST"])
        body = bytearray()
        while len(body) <= UNSUBSCRIBE_MAX_BODY:
            chunk = await request.content.read(UNSUBSCRIBE_MAX_BODY + 1 - len(body))
            if not chunk:
                break
            body += chunk
        if len(body) > UNSUBSCRIBE_MAX_BODY:
            return html(413)
        try:
            form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            return html(400)
        if form.get("List-Unsubscribe") != ["One-Click"]:
            return html(400)
        topic = await self.ctx.run_store(one_click_unsubscribe, self.ctx.registry, m["topic"], int(m["account"]),
                                         m["token"])
        return html(200, page(200, topic=topic)) if topic is not None else html(404)


STYLESHEET = Path(__file__).parent / "static" / "civic.css"
#: the one script: passkeys on the account page and at sign-in (progressive enhancement)
PASSKEYS_SCRIPT = Path(__file__).parent / "static" / "passkeys.js"


def citizen_app(ctx) -> web.Application:
    """The citizens' routes; with oidc.enabled the provider's (web/oidc.py) too, its forms
    behind the CSRF check (sessions.py). The pages' one stylesheet and one script are served
    from memory."""
    routes = CitizenRoutes(ctx)
    middlewares = [guard(ctx, "http")]
    sessions = None
    if ctx.config.oidc.enabled:
        from .oidc import CSRF_EXEMPT
        from .sessions import Sessions, csrf_middleware

        sessions = Sessions(ctx)
        exempt = set(CSRF_EXEMPT)  # and the one-click route's canonical form, once it is added
        middlewares.append(csrf_middleware(sessions, exempt))
    app = web.Application(client_max_size=ctx.config.http.max_body_size, middlewares=middlewares)
    css = STYLESHEET.read_bytes()

    async def stylesheet(request: web.Request) -> web.Response:
        return web.Response(body=css, content_type="text/css", headers={"Cache-Control": "max-age=3600"})

    app.router.add_get("/static/civic.css", stylesheet)
    script = PASSKEYS_SCRIPT.read_bytes()

    async def passkeys_script(request: web.Request) -> web.Response:
        return web.Response(body=script, content_type="text/javascript", charset="utf-8",
                            headers={"Cache-Control": "max-age=3600"})

    app.router.add_get("/static/passkeys.js", passkeys_script)
    portal = None
    if sessions is not None:
        from . import portal as portal_pages
        from .oidc import add_routes

        portal = portal_pages.add_routes(app, ctx, sessions, add_routes(app, ctx, sessions))
    for path in AUTOCONFIG_PATHS:
        app.router.add_get(path, routes.autoconfig)
    if portal is not None:
        async def profile(request: web.Request) -> web.StreamResponse:
            """``?emailaddress=`` for any address (as before); without it, the signed-in citizen's."""
            if "emailaddress" in request.query:
                return await routes.mobileconfig(request)
            return await portal.profile(request)

        app.router.add_get("/mobileconfig", profile)
    else:
        app.router.add_get("/mobileconfig", routes.mobileconfig)
    one_click = app.router.add_route("*", UNSUBSCRIBE_ROUTE, routes.unsubscribe)
    if sessions is not None:
        exempt.add(one_click.resource.canonical)  # RFC 8058: posted by mail clients, its URL an HMAC
    add_ca_routes(app, ctx)
    return app
