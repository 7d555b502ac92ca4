"""The HTTP face of `civicmail serve` on aiohttp, on the same event loop as the mail listeners:
the citizens' listener (``http.listen``: autoconfig, Apple's profile, one-click unsubscribe) and
the metrics listener (``http.metrics_listen``). Imported by the service factory only, never by
the CLI at start-up."""
