"""RFC 8058 one-click unsubscribe and mail-client autoconfiguration: a minimal HTTP/1.1
endpoint on asyncio (stdlib only).

``GET /mail/config-v1.1.xml`` (also under ``/.well-known/autoconfig/``) answers Thunderbird's
autoconfiguration (the format K-9 and Evolution read too): the IMAP and submission servers, their
ports and security, and the full address as user name. Thunderbird asks
``http://autoconfig.<domain>/mail/config-v1.1.xml`` and
``https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml``; point those names here.

``POST /unsubscribe/<topic>/<account>/<token>`` with the body ``List-Unsubscribe=One-Click``
unsubscribes; the token is an HMAC, so a URL cannot be made up for someone else. A ``GET`` of
the same URL (a person clicking a link, or a scanner following it) never unsubscribes: it
answers with a page holding a button that POSTs. One request per connection; sizes and time
are bounded.
"""
from __future__ import annotations

import asyncio
import html
import logging
import re
import urllib.parse

from ..config import parse_hostport
from .topics import one_click_topic, one_click_unsubscribe

log = logging.getLogger("civicmail.services.http")

MAX_HEADER = 8192
MAX_BODY = 4096
TIMEOUT = 10.0
#: a connection refused by the gate (server.max_connections) has its request head read (for up
#: to REFUSE_WAIT seconds) before the 503, since closing with a request unread resets the
#: connection and the client never sees the 503; at most REFUSE_LINGER such at once, the
#: others are answered and closed at once
REFUSE_WAIT = 0.5
REFUSE_LINGER = 32
AUTOCONFIG_PATHS = ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml")
PATH = re.compile(r"^/unsubscribe/([A-Za-z0-9-]{1,64})/(\d{1,18})/([A-Za-z0-9_-]{8,64})\Z")

PAGE_DONE = ('<!DOCTYPE html><html lang="zh-CN"><body><p>已退订“{topic}”，不会再收到此类邮件。</p>'
             '<p>You are unsubscribed from “{topic}”.</p></body></html>')
PAGE_CONFIRM = ('<!DOCTYPE html><html lang="zh-CN"><body><p>退订“{topic}”？</p><p>Unsubscribe from “{topic}”?</p>'
                '<form method="post" action="{action}">'
                '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
                '<button type="submit">退订 / Unsubscribe</button></form></body></html>')
PAGE_NOT_FOUND = "<!DOCTYPE html><html><body><p>链接无效。This link is not valid.</p></body></html>"
PAGE_BAD = "<!DOCTYPE html><html><body><p>Bad request.</p></body></html>"
PAGE_ERROR = "<!DOCTYPE html><html><body><p>请稍后再试。Please try again later.</p></body></html>"


class OneClickHTTP:
    name = "citizen services HTTP"

    def __init__(self, ctx, listen: str) -> None:
        self.ctx = ctx
        self.listen = listen
        self.address: tuple[str, int] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._refusing = 0

    async def start(self) -> None:
        from ..server import StartupError

        host, port = parse_hostport(self.listen, "http.listen")
        try:
            self._server = await asyncio.start_server(self._connection, host, port, reuse_address=True,
                                                      limit=MAX_HEADER)
        except OSError as exc:
            raise StartupError(f"http.listen = {self.listen}: cannot listen: {exc.strerror or exc}") from None
        self.address = self._server.sockets[0].getsockname()[:2]
        log.info("citizen services HTTP listening on %s:%d", *self.address)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        gate = self.ctx.gate
        if not gate.enter("http", peer[0] if peer else "?"):
            await self._refuse(reader, writer)
            return
        try:
            try:
                status, page = await asyncio.wait_for(self._request(reader), TIMEOUT)
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                    ValueError, UnicodeDecodeError):
                status, page = "400 Bad Request", PAGE_BAD
            except Exception:
                log.exception("one-click request failed")
                status, page = "503 Service Unavailable", PAGE_ERROR
            await self._reply(writer, status, page)
        finally:
            gate.leave()

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing < REFUSE_LINGER:
            self._refusing += 1
            try:
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REFUSE_WAIT)
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                pass
            finally:
                self._refusing -= 1
        await self._reply(writer, "503 Service Unavailable", PAGE_ERROR)

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, status: str, page: str) -> None:
        kind = "text/html"
        if page.startswith("<?xml"):
            kind = "application/xml"
        body = page.encode("utf-8")
        try:
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {kind}; charset=utf-8\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _request(self, reader: asyncio.StreamReader) -> tuple[str, str]:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEADER:
            return "431 Request Header Fields Too Large", PAGE_BAD
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length < 0 or length > MAX_BODY:
            return "413 Content Too Large", PAGE_BAD
        body = await reader.readexactly(length) if length else b""
        path = urllib.parse.urlsplit(target).path
        if path in AUTOCONFIG_PATHS:
            if method != "GET":
                return "405 Method Not Allowed", PAGE_BAD
            return "200 OK", autoconfig_xml(self.ctx.config)
        m = PATH.match(path)
        if m is None:
            return "404 Not Found", PAGE_NOT_FOUND
        topic_id, account_id, token = m.group(1), int(m.group(2)), m.group(3)
        if method == "GET":
            topic = await self.ctx.run(one_click_topic, self.ctx.registry, topic_id, account_id, token)
            return unsubscribe_page(PAGE_CONFIRM, topic, action=path)
        if method != "POST":
            return "405 Method Not Allowed", PAGE_BAD
        form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True)
        if form.get("List-Unsubscribe") != ["One-Click"]:
            return "400 Bad Request", PAGE_BAD
        topic = await self.ctx.run(one_click_unsubscribe, self.ctx.registry, topic_id, account_id, token)
        return unsubscribe_page(PAGE_DONE, topic)


def unsubscribe_page(page: str, topic: str | None, action: str = "") -> tuple[str, str]:
    """(status, page) naming the topic; a link that is not genuine (topic None) is not found."""
    if topic is None:
        return "404 Not Found", PAGE_NOT_FOUND
    return "200 OK", page.format(topic=html.escape(topic), action=html.escape(action))


def autoconfig_xml(config) -> str:
    """Thunderbird's autoconfig document (clientConfig 1.1) for this city, from the listeners
    configured: implicit TLS first (what clients should prefer), then STARTTLS."""
    host = html.escape(config.server.hostname)
    domain = html.escape(config.city.domain)
    servers = []
    for protocol, _, port, implicit_tls in config.client_endpoints():
        kind = "incomingServer" if protocol == "imap" else "outgoingServer"
        servers.append(f"""    <{kind} type="{protocol}">
      <hostname>{host}</hostname>
      <port>{port}</port>
      <socketType>{"SSL" if implicit_tls else "STARTTLS"}</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </{kind}>
""")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="{domain}">
    <domain>{domain}</domain>
    <displayName>{domain}</displayName>
    <displayShortName>{domain}</displayShortName>
{"".join(servers)}  </emailProvider>
</clientConfig>
"""
