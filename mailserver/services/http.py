"""What the citizens' HTTP face serves, as text: Thunderbird's autoconfig, Apple's profile and
the RFC 8058 one-click unsubscribe pages. The server (aiohttp) and its routes are in
``mailserver/web``; nothing here speaks HTTP.

``GET /mail/config-v1.1.xml`` (also under ``/.well-known/autoconfig/``) answers Thunderbird's
autoconfiguration (the format K-9 and Evolution read too): the IMAP and submission servers, their
ports and security, and the full address as user name. Thunderbird asks
``http://autoconfig.<domain>/mail/config-v1.1.xml`` and
``https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml``; point those names here.
``GET /mobileconfig?emailaddress=ADDRESS`` is the same for iPhone, iPad and Mac: an unsigned
configuration profile with one IMAP account (and its submission server) for that address.

``POST /unsubscribe/<topic>/<account>/<token>`` with the body ``List-Unsubscribe=One-Click``
unsubscribes; the token is an HMAC, so a URL cannot be made up for someone else. A ``GET`` of
the same URL (a person clicking a link, or a scanner following it) never unsubscribes: it
answers with a page holding a button that POSTs.
"""
from __future__ import annotations

import html
import plistlib
import re
import uuid

from ..identity.addresses import normalise_address

AUTOCONFIG_PATHS = ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml")
#: the one-click URL's parts, as route patterns (anything else is 404)
UNSUBSCRIBE_ROUTE = "/unsubscribe/{topic:[A-Za-z0-9-]{1,64}}/{account:[0-9]{1,18}}/{token:[A-Za-z0-9_-]{8,64}}"
#: the largest one-click body read (RFC 8058's is "List-Unsubscribe=One-Click", 26 bytes)
UNSUBSCRIBE_MAX_BODY = 1024
MOBILECONFIG_TYPE = "application/x-apple-aspen-config"
#: a local part a profile is made for: printable, no quoting, as the city's addresses are
_LOCAL_PART = re.compile(r"[^\s\"<>\\@()\[\],;:]{1,64}\Z")

PAGE_DONE = ('<!DOCTYPE html><html lang="zh-CN"><body><p>已退订“{topic}”，不会再收到此类邮件。</p>'
             '<p>You are unsubscribed from “{topic}”.</p></body></html>')
PAGE_CONFIRM = ('<!DOCTYPE html><html lang="zh-CN"><body><p>退订“{topic}”？</p><p>Unsubscribe from “{topic}”?</p>'
                '<form method="post" action="{action}">'
                '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
                '<button type="submit">退订 / Unsubscribe</button></form></body></html>')
PAGE_NOT_FOUND = "<!DOCTYPE html><html><body><p>链接无效。This link is not valid.</p></body></html>"
PAGE_BAD = "<!DOCTYPE html><html><body><p>Bad request.</p></body></html>"
PAGE_ERROR = "<!DOCTYPE html><html><body><p>请稍后再试。Please try again later.</p></body></html>"
PAGE_TOO_LARGE = "<!DOCTYPE html><html><body><p>Request too large.</p></body></html>"


def page(status: int, action: str = "", topic: str = "") -> str:
    """The HTML page for an HTTP status (200 with ``action``: the one-click confirmation whose
    button POSTs to ``action``; 200 without: done), naming the ``topic``."""
    if status == 200:
        if action:
            return PAGE_CONFIRM.format(action=html.escape(action), topic=html.escape(topic))
        return PAGE_DONE.format(topic=html.escape(topic))
    if status == 404:
        return PAGE_NOT_FOUND
    if status == 413:
        return PAGE_TOO_LARGE
    if status >= 500:
        return PAGE_ERROR
    return PAGE_BAD


def autoconfig_xml(config) -> str:
    """Thunderbird's autoconfig document (clientConfig 1.1) for this city, from the listeners
    configured: implicit TLS first (what clients should prefer), then STARTTLS."""
    host = html.escape(config.client_host)
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


def profile_address(config, text: str) -> str | None:
    """The address a profile is asked for, normalised, if it is a plain address in one of the
    city's domains; else None. Whether the mailbox exists is not told (no address oracle)."""
    if len(text) > 254 or text.count("@") != 1:
        return None
    try:
        address = normalise_address(text)
    except ValueError:
        return None
    local, _, domain = address.partition("@")
    if not _LOCAL_PART.match(local) or domain not in config.local_domains:
        return None
    return address


def mobileconfig(config, address: str) -> bytes | None:
    """Apple's configuration profile (an unsigned plist) with one mail account for ``address``:
    IMAP and SMTP submission on the hostname and ports of the listeners configured, implicit TLS
    preferred, password authentication, the address as user name. Its identifiers are derived
    from the city and the address, so installing it again replaces it instead of adding a twin.
    None when IMAP or submission is switched off."""
    endpoints = config.client_endpoints()
    imap = next((port for protocol, _, port, _ in endpoints if protocol == "imap"), None)
    smtp = next((port for protocol, _, port, _ in endpoints if protocol == "smtp"), None)
    if imap is None or smtp is None:
        return None  # no listener a client could use
    domain = config.city.domain
    host = config.client_host
    reverse = ".".join(reversed(domain.split(".")))
    account_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailto:{address}#account"))
    profile_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailto:{address}#profile"))
    account = {
        "PayloadType": "com.apple.mail.managed", "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse}.mail.account.{account_uuid}", "PayloadUUID": account_uuid,
        "PayloadDisplayName": address, "PayloadDescription": f"{config.city.name} {address}",
        "EmailAccountType": "EmailTypeIMAP", "EmailAccountDescription": f"{config.city.name} {domain}",
        "EmailAddress": address,
        "IncomingMailServerHostName": host, "IncomingMailServerPortNumber": imap,
        # Apple's "SSL" means TLS from the start on the implicit-TLS port, STARTTLS on the other
        "IncomingMailServerUseSSL": True, "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerUsername": address,
        "OutgoingMailServerHostName": host, "OutgoingMailServerPortNumber": smtp,
        "OutgoingMailServerUseSSL": True, "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerUsername": address, "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration", "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse}.mail.{profile_uuid}", "PayloadUUID": profile_uuid,
        "PayloadDisplayName": f"{config.city.name} {address}", "PayloadOrganization": config.city.name,
        "PayloadDescription": f"{config.city.name}: {address} in Mail", "PayloadRemovalDisallowed": False,
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)
