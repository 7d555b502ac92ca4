"""What every response of the HTTP face passes through: the body and time bounds, errors as our
own short pages (never an exception's text), the security headers, and the request count."""
from __future__ import annotations

import asyncio
import logging
import urllib.parse

from aiohttp import web

from ..errors import StoreUnavailable
from ..services.http import page

log = logging.getLogger("civicmail.web")

#: no inline or foreign scripts (our one file only: passkeys.js, which may fetch its options from
#: here), no frames, plugins or foreign resources; forms post only back here; never framed
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
                           "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def content_security_policy(form_target: str | None = None) -> str:
    """The policy, letting forms also go to ``form_target``'s origin: a sign-in form's answer
    redirects to the website's redirect URI, and browsers hold redirects after a form to
    form-action too (CSP 3)."""
    if not form_target:
        return CONTENT_SECURITY_POLICY
    parts = urllib.parse.urlsplit(form_target)
    if parts.scheme in ("http", "https") and parts.netloc:
        source = f"{parts.scheme}://{parts.netloc}"
    elif parts.scheme:
        source = f"{parts.scheme}:"  # a native app's private-use scheme (RFC 8252 7.1)
    else:
        return CONTENT_SECURITY_POLICY
    if not all(c.isalnum() or c in ":/.-+[]_" for c in source):
        return CONTENT_SECURITY_POLICY  # nothing that could end the directive
    return CONTENT_SECURITY_POLICY.replace("form-action 'self'", f"form-action 'self' {source}")


SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP 2
    "X-Content-Type-Options": "nosniff",
    # one-click URLs carry a token: no page of ours tells another site where it came from
    "Referrer-Policy": "no-referrer",
}
#: with TLS: a year of HTTPS only for this host (not its subdomains, which may be other services)
HSTS = "max-age=31536000"
#: the route label of a request no route matched
NO_ROUTE = "(none)"
#: the Server header: the product, not its framework and version
SERVER = "civicmail"


def html(status: int, text: str | None = None) -> web.Response:
    return web.Response(status=status, text=page(status) if text is None else text, content_type="text/html",
                        charset="utf-8")


def guard(ctx, listener: str):
    """The middleware of one listener (``listener`` labels its requests in the metrics)."""
    http = ctx.config.http
    headers = dict(SECURITY_HEADERS)
    if http.tls:
        headers["Strict-Transport-Security"] = HSTS
    requests = ctx.metrics.http_requests

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else NO_ROUTE
        try:
            if (request.content_length or 0) > http.max_body_size:
                response: web.StreamResponse = html(413)
            else:
                async with asyncio.timeout(http.request_timeout):
                    response = await handler(request)
        except web.HTTPException as exc:  # aiohttp's 404, 405, 413 (a chunked body): our page
            response = exc if exc.status < 400 else html(exc.status)
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
        except (TimeoutError, StoreUnavailable):
            response = html(503)
        except Exception:
            log.exception("HTTP %s %s failed", request.method, route)
            response = html(503)
        for name, value in headers.items():  # a page may have set its own policy (content_security_policy)
            response.headers.setdefault(name, value)
        response.headers["Server"] = SERVER
        requests.labels(listener, route, str(response.status)).inc()
        return response

    return middleware
