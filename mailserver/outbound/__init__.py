"""Mail for other domains: a persistent queue (``outbound_message``), DKIM signing, relay
delivery with exponential backoff, and a DSN (RFC 3464) to the sender after the last attempt."""
