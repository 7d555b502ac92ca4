"""Configuration: loaded once into a frozen object and passed in, never read from a global.

The file is TOML (``config/civicmail.toml`` documents every key). It is found by
``-c/--config PATH``, else ``$CIVICMAIL_CONFIG``, else ``./civicmail.toml``. Any key can be
overridden for one run with ``--set section.key=value``. Unknown sections or keys and values of
the wrong type are errors that name the key.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .identity.addresses import normalise_domain

REPO_ROOT = Path(__file__).resolve().parent.parent
#: characters the store's folder.name column holds
FOLDER_NAME_COLUMN = 512


@dataclass(frozen=True)
class ServerConfig:
    #: development mode: AUTH allowed without TLS on loopback addresses only
    development: bool = True
    #: the host name this server announces (SMTP banner, Received headers) and mail clients are
    #: told (Config.client_host: localhost instead in development on loopback)
    hostname: str = "mail.civic.example"
    #: where the database, keys, certificates and spool live; relative to the config file
    data_dir: str = "."
    log_level: str = "info"
    #: client connections open at once over every listener (SMTP, IMAP, HTTP); 0: the soft open
    #: file limit (RLIMIT_NOFILE) less a reserve for the store, spool and workers. A value above
    #: that is cut to it. Past it a new connection gets a short refusal (421, * BYE, 503).
    max_connections: int = 0
    #: seconds a connection to an implicit-TLS port (IMAPS, SMTPS) may take to finish its TLS
    #: handshake; it holds a place in max_connections from TCP accept, and is closed after this
    tls_handshake_timeout: float = 10.0
    #: processes `serve` runs (0: one per CPU core): the first serves everything, the others IMAP
    #: (connections the first accepts and hands over in turn, imap/handoff.py) and the citizens'
    #: HTTP (portal, sign-in; the same port, SO_REUSEPORT), told of each other's writes as nodes
    #: are (workers.py). The connection gate, the per-user and HTTP caps and the login throttle
    #: are per process; IMAP's pre-login cap per address is the server's
    workers: int = 1
    #: with workers: seconds before a new IMAP worker is started in place of one that died ...
    worker_respawn_delay: float = 1.0
    #: ... twice the last wait if the dead one lived less than this many seconds ...
    worker_respawn_steady: float = 30.0
    #: ... but never longer than this (a worker that cannot start costs one attempt per this)
    worker_respawn_max: float = 60.0
    #: the event loop: "uvloop" (libuv's, about half the CPU per socket operation of asyncio's
    #: own) or "asyncio" (the standard library's)
    event_loop: str = "uvloop"


@dataclass(frozen=True)
class CityConfig:
    name: str = "示例市"
    #: the mailbox domain: every citizen's address is local@domain
    domain: str = "civic.example"
    #: further domains for which this server accepts mail
    extra_domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoreConfig:
    #: a SQLAlchemy URL; empty means a SQLite file civicmail.sqlite3 in the data directory
    url: str = ""
    #: PostgreSQL behind a pooler in transaction mode (PgBouncer): ``url`` names the pooler and
    #: this the same database directly, for the one LISTEN connection a node holds (a pooled
    #: connection cannot keep a LISTEN). Set, ``url``'s connections prepare no statements and send
    #: no startup options (the pooler refuses them: its connect_query sets the timeouts).
    #: Empty: ``url`` is direct and LISTEN uses it too
    listen_url: str = ""
    #: SQLite only: seconds a writer waits for the lock before failing
    busy_timeout: float = 30.0
    #: PostgreSQL: seconds to open a connection, or to wait for a free one from the pool
    connect_timeout: float = 5.0
    #: PostgreSQL: longest statement, and longest idle time inside a transaction (server side);
    #: also how long unacknowledged data may wait on the connection's TCP socket
    statement_timeout: float = 30.0
    #: PostgreSQL: rows a pooled connection's kept cursor may hold until its next read
    #: (driver.driver_rows); a larger result's cursor is closed at once, so this bounds the memory
    #: each connection keeps between reads
    keep_result_rows: int = 1000
    #: PostgreSQL, straight (not behind a pooler): statements each connection keeps prepared on
    #: the server (psycopg's prepared_max, 100 of its own), the least recently used deallocated
    #: past it. The hot statements name the account's partition (store/leaves.py), so each has a
    #: text per partition: ~15 shapes times 16 partitions, and the rest
    prepared_statements: int = 400
    #: seconds a RCPT lookup or a login waits for the store before 451 4.3.0 / NO [UNAVAILABLE]
    lookup_timeout: float = 10.0
    #: seconds the end of DATA waits for its commit before 451 4.3.0; such a message is never
    #: stored after (below clients' DATA timeouts: Postfix and smtplib users wait 5-10 minutes)
    commit_timeout: float = 60.0
    #: where citizens' mailboxes live: "local" (this store, read over civicmail's IMAP) or
    #: "external" (a Dovecot or Exchange the city already runs: notices and mail for mailboxes
    #: go to it by LMTP, the [lmtp] section; civicmail's IMAP listeners stay off)
    mode: str = "local"


STORE_MODES = ("local", "external")


@dataclass(frozen=True)
class LMTPConfig:
    """The external mail store (store.mode = "external"): an LMTP server (RFC 2033)."""

    #: "host:port", or "unix:/path/to/socket"; required in external mode
    target: str = ""
    #: STARTTLS before the transaction (TCP only); the server's certificate is verified against
    #: the system's CAs, or cafile
    starttls: bool = False
    #: PEM file of the CA(s) that signed the LMTP server's certificate; empty: the system's
    cafile: str = ""
    #: connections open to the server at once (each carries one transaction at a time)
    connections: int = 4
    #: recipients of one transaction (a message identical for several mailboxes: SMTP mail to several citizens)
    max_recipients: int = 50
    #: seconds for each network step (connect, a reply, the message)
    timeout: float = 60.0
    #: seconds a server that does not answer is tried again (with backoff) before the drop stops
    #: (the same command resumes it) or a queued message waits for its next attempt
    retry_seconds: float = 60.0
    #: seconds a mailbox the server refused for now (4xx: over quota with tempfail, a lookup
    #: failure) is tried again before its row fails (retryable: `civicmail drop retry`); short, as
    #: the batch it is in waits for it
    deferred_retry_seconds: float = 5.0


@dataclass(frozen=True)
class BlobsConfig:
    """Where message bodies are kept (``store/blobs.py``, issue 13 item 2)."""

    #: "local": a directory under the data directory (one node); "s3": S3-compatible object
    #: storage (several nodes); "database": in the ``content`` table, as before migration 0017;
    #: empty: "local" on SQLite, "database" on PostgreSQL (``Config.blobs_backend``)
    backend: str = ""
    #: local: the directory, relative to the data directory
    dir: str = "blobs"
    #: local: how a batch of blobs is made durable: "batch", two syncfs calls for the whole
    #: batch (the file system's other dirty data is flushed too); "file", a fsync per blob
    sync: str = "batch"
    #: local: a put of this many bodies or more (a delivery batch, a migration batch) is written
    #: as one pack file, indexed in packs/index.sqlite3, instead of a file each (0: never)
    pack_min: int = 64
    #: s3: the bucket, the endpoint URL (empty: AWS), the region, a key prefix
    bucket: str = ""
    endpoint: str = ""
    region: str = ""
    prefix: str = ""
    #: s3: the access key id, and the name of the environment variable holding its secret (the
    #: secret never goes in the configuration file); both empty: boto3's own credential chain
    #: (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, shared files, an instance role)
    access_key: str = ""
    secret_key_env: str = ""
    #: megabytes of bodies a process keeps in memory for repeated reads
    cache_mb: int = 32
    #: a blob nothing refers to is deleted only once it is older than this (minutes): a write
    #: still on its way to its commit is never swept away (``civicmail blobs gc``)
    orphan_grace_minutes: int = 60
    #: serve deletes released blobs this often (seconds; 0: never, leave it to `blobs gc`)
    gc_interval: float = 300.0
    #: serve moves bodies still in the database out to the blob store in the background, this
    #: many per transaction (0: never; `civicmail blobs migrate` does it in the foreground)
    migrate_batch: int = 500


@dataclass(frozen=True)
class KeysConfig:
    #: folder of the ID-number keys (AES-GCM and HMAC), relative to the data directory
    dir: str = "keys"


@dataclass(frozen=True)
class PasswordConfig:
    #: argon2id parameters (OWASP's recommended minimum by default)
    time_cost: int = 2
    memory_cost_kib: int = 19456
    parallelism: int = 1
    #: threads that hash passwords, and so hashes in memory at once (each memory_cost_kib);
    #: 0: one per CPU core
    hash_threads: int = 0
    #: seconds an activation code stays valid
    activation_ttl: int = 60 * 60 * 24 * 90


@dataclass(frozen=True)
class TLSConfig:
    #: PEM certificate chain and key, relative to the data directory
    cert: str = "tls/cert.pem"
    key: str = "tls/key.pem"


@dataclass(frozen=True)
class SMTPConfig:
    listen: str = "127.0.0.1:2525"
    #: largest message accepted, in bytes (announced with SIZE)
    max_message_size: int = 26214400
    #: longest line accepted in DATA, in bytes including CRLF (RFC 5321: 1000)
    max_line_length: int = 1000
    max_recipients: int = 100
    #: concurrent connections one client IP may hold
    max_connections_per_ip: int = 50
    #: messages one client IP may send per minute
    max_messages_per_ip_per_minute: int = 6000
    #: refuse mail on this port whose envelope sender or From: is in a local domain, unless the
    #: client is in trusted_networks: such mail comes only through authenticated submission
    refuse_local_senders: bool = True
    #: client networks that may send as a local domain on this port without AUTH (local programs)
    trusted_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class SubmissionConfig:
    listen: str = "127.0.0.1:2587"
    #: messages an agency may submit per minute
    agency_rate_per_minute: int = 60000


@dataclass(frozen=True)
class SubmissionsConfig:
    listen: str = "127.0.0.1:2465"


@dataclass(frozen=True)
class IMAPConfig:
    listen: str = "127.0.0.1:2143"
    #: seconds a logged-in client may send nothing before it is logged out, in IDLE too (RFC 3501:
    #: at least 30 min; RFC 2177: clients re-issue IDLE within 29 min)
    idle_timeout: int = 1800
    #: longest command line, and largest literal, in bytes
    max_line_length: int = 65536
    max_literal_size: int = 52428800
    #: bytes of all the messages of one APPEND together (RFC 3502 MULTIAPPEND); a command is
    #: held whole before it runs, so with max_literal_size this bounds a connection's memory
    max_multiappend_size: int = 52428800
    #: parts (TEXT literals and URLs) of one RFC 4469 CATENATE message; more: BAD [LIMIT]. Each
    #: URL reads and parses a stored message, so this bounds one APPEND's work
    max_catenate_parts: int = 64
    #: distinct keywords (flags without a backslash) a folder may hold, as the session knows
    #: them, and one message may carry; a STORE or APPEND that would pass it: NO [LIMIT], nothing
    #: changed. Every SELECT and new keyword repeats the folder's whole list (FLAGS), so this
    #: bounds what one citizen makes every client of the folder read (Cyrus: 128 a folder)
    max_keywords: int = 128
    #: longest keyword in characters (Dovecot's mail_max_keyword_length is 50)
    max_keyword_length: int = 64
    #: concurrent connections per user and client IP
    max_connections_per_user_ip: int = 50
    #: concurrent connections one client IP may hold before they log in (one that logs in no
    #: longer counts); more are refused with * BYE at once
    max_preauth_connections_per_ip: int = 20
    #: with server.workers above 1: seconds a worker waits for the first process to grant a
    #: login its place under max_connections_per_user_ip (imap/handoff.py); then NO [LIMIT]
    handoff_ask_timeout: float = 5.0
    #: seconds from connecting to a successful login; then * BYE
    preauth_timeout: int = 60
    #: before login, the longest line, the largest literal and the largest whole command, in
    #: bytes (RFC 7888 4: a larger literal gets BAD without "+", or BYE if non-synchronising)
    max_preauth_command_size: int = 8192
    #: commands one connection may run per second, on average (0: no limit); a faster client is
    #: slowed down, never refused; it may run command_burst commands at once before that
    max_commands_per_second: int = 500
    command_burst: int = 1000
    #: days an expunged UID is remembered for QRESYNC (0: for ever); older ones are pruned
    expunge_history_days: int = 90
    #: threads for the commands whose cost the client chooses (SEARCH, FETCH of bodies, LIST
    #: with wildcards), apart from the store threads of logins and deliveries
    heavy_threads: int = 4
    #: such commands one user may have running at once, over all their connections
    heavy_jobs_per_user: int = 2
    #: threads for the cheap reads of every command (STATUS, SELECT, FETCH FLAGS, what changed
    #: in the selected folder), each taking the reads queued meanwhile in one go (lanes.ReadLane)
    read_threads: int = 1
    #: on PostgreSQL, threads for the IMAP writes (STORE, EXPUNGE, APPEND ... and the look after
    #: each), each taking the queued writes one at a time, each in its own transaction: fewer
    #: threads passing the GIL around than the store threads'. A user's writes past
    #: pg_write_jobs_per_user, several messages at once (MULTIAPPEND, COPY, MOVE) and every
    #: write while all the lane's threads are stuck in one (0.1 s) run on the store threads
    #: (lanes.SpillLane). 0: every write runs on the store threads. 4 measured 11 to 39 % less
    #: server CPU a command than 0 and as many commands/s or more; 2 fewer commands/s on a
    #: loaded machine (docs/benchmarks.md, branch pgfast)
    pg_write_threads: int = 4
    #: writes one user may have on that lane at once, queued or running, over all their
    #: connections; the next ones run on the store threads
    pg_write_jobs_per_user: int = 1
    #: on SQLite, the cheap reads of a small folder run on the event loop itself, each within
    #: this many SQLite steps (50,000: about a millisecond); a larger one goes to the read lane.
    #: 0: all go to the read lane, which measured faster on a machine busy with other work; the
    #: default measured 16 % more commands/s on a quiet one (docs/benchmarks.md)
    loop_read_budget: int = 50000
    #: on SQLite, whether a change of flags only (STORE, the claim of \\Recent) is fsynced
    #: before its tagged OK. False (as Dovecot's mail_fsync=optimized): it is committed (another
    #: process sees it, a crash of the server keeps it) but reaches the disk with the next fsynced
    #: commit (an APPEND, EXPUNGE, delivery) or the kernel's writeback; a power loss may undo
    #: the last flag changes, never a message (docs/security.md). True: every write is fsynced
    fsync_flag_changes: bool = False
    #: levels of nesting in a SEARCH (parentheses, NOT, OR) and of parenthesised lists in any
    #: command; deeper: BAD [LIMIT]
    max_search_depth: int = 64
    #: search keys in one SEARCH, NOT, OR and groups included; more: BAD [LIMIT]
    max_search_keys: int = 256
    #: bytes of one METADATA value (RFC 5464); a larger one: NO [METADATA MAXSIZE n], nothing
    #: stored. 64 KiB, the value width of Dovecot's documented SQL schema for its imap_metadata
    metadata_max_size: int = 65536
    #: METADATA entries of one account, server and folders, private and shared together; more:
    #: NO [METADATA TOOMANY]. With metadata_max_size it bounds one GETMETADATA's answer (16 MiB)
    metadata_max_entries: int = 256
    #: searches and sorts one session keeps up to date (RFC 5267 SEARCH / SORT RETURN (UPDATE));
    #: more: the answer, then NO [NOUPDATE]. Each is searched again at every change of the
    #: folder, and a kept sort that gains a message sorts the folder again
    max_search_updates: int = 10
    #: RFC 5465 NOTIFY: notifications that may wait for one session (changed folders, folder
    #: list changes, new messages to FETCH); more: * OK [NOTIFICATIONOVERFLOW] and NOTIFY is off
    notify_max_events: int = 1000


@dataclass(frozen=True)
class IMAPSConfig:
    listen: str = "127.0.0.1:2993"


@dataclass(frozen=True)
class AccountsConfig:
    #: mailbox quota in bytes (IMAP QUOTA, enforced on APPEND and delivery)
    quota_bytes: int = 1073741824
    #: folders per account, INBOX and the special-use ones included (CREATE and RENAME beyond: NO [LIMIT])
    max_folders: int = 1000
    #: levels of a folder name ("a/b/c" has 3); Dovecot's limit
    max_folder_depth: int = 20
    #: characters of a whole folder name (at most FOLDER_NAME_COLUMN, the store's column width)
    max_folder_name_length: int = 255
    #: names on an account's subscription list (SUBSCRIBE beyond: NO [LIMIT]); names stay there
    #: after DELETE, so room for every folder and as many again
    max_subscriptions: int = 2000


@dataclass(frozen=True)
class LoginConfig:
    #: failed logins allowed per client IP, and per account, in the window before throttling
    max_failures_per_ip: int = 20
    max_failures_per_account: int = 10
    window_seconds: int = 300
    #: logins whose last verified password is remembered (as a MAC, identity/logincache.py) so that
    #: logging in again skips argon2; 0 turns the cache off
    cache_size: int = 10_000
    #: seconds a remembered verification serves before the password is hashed again
    cache_ttl_seconds: int = 3600


@dataclass(frozen=True)
class DKIMConfig:
    selector: str = "civic1"
    #: private key (PEM), relative to the data directory
    key: str = "dkim/civic1.key"


@dataclass(frozen=True)
class OutboundConfig:
    #: "host:port" of the relay that carries mail to other domains; empty: mail stays queued
    relay: str = ""
    relay_username: str = ""
    relay_password: str = ""
    relay_starttls: bool = False
    #: attempts before a bounce (DSN) goes back to the sender
    max_attempts: int = 8
    #: first retry delay in seconds; each later one doubles
    retry_base_seconds: int = 60
    #: seconds a claimed entry is reserved for the node attempting it; renewed every third of it
    #: while the attempt runs (a heartbeat), so another node resends only after the node died
    lease_seconds: float = 900.0


@dataclass(frozen=True)
class DeliveryConfig:
    #: notice-type folder (templates/<id>/); empty means the one shipped with civicmail
    templates_dir: str = ""
    #: spool folder watched by `civicmail serve`, relative to the data directory
    spool_dir: str = "spool"
    #: rows per delivery transaction
    batch_size: int = 1000
    #: worker processes for render and compose; 0 means one per core
    workers: int = 0
    #: a drop writer's SQLite WAL (the database's, and the local blob store's pack index) is copied
    #: into its file once it holds this many pages (4 KiB each): the bound of each WAL while a drop runs
    writer_wal_pages: int = 32768
    #: longest line of a CSV or JSON Lines drop, in characters; a longer one is an invalid row
    max_line_chars: int = 1048576
    #: deepest nesting of a JSON Lines row (a row is one flat object); deeper is an invalid row
    max_json_depth: int = 16
    #: an XLSX drop whose parts unzip to more bytes than this is refused before it is read
    xlsx_max_unzipped_bytes: int = 134217728
    #: an XLSX drop with more shared strings (distinct texts) than this is refused before it is read
    xlsx_max_shared_strings: int = 1000000
    #: seconds a drop run retries a database write (or a read of its match stage) that failed for
    #: an outage (with backoff) before it stops (the same command run again then resumes it)
    store_retry_seconds: float = 60.0
    #: seconds a running drop (a spooled file, the drop mailbox's watcher) is reserved for the node
    #: running it; renewed every third of it while it runs, taken over by another node only after
    #: it passed unrenewed (the node died or stalled)
    lease_seconds: float = 60.0


@dataclass(frozen=True)
class HTTPConfig:
    #: the citizen-services endpoint (autoconfig, Apple profile, RFC 8058 one-click unsubscribe); empty: off
    listen: str = "127.0.0.1:2080"
    #: how citizens' mail clients reach it (behind a proxy: the public https URL); empty: http://listen
    base_url: str = ""
    #: serve HTTPS with tls.cert / tls.key (and send HSTS); off behind a proxy that terminates TLS
    tls: bool = False
    #: seconds a client has to send a whole request (and may stay idle between requests), and a
    #: page has to be answered; then the connection is closed (slow clients hold no place for long)
    request_timeout: float = 10.0
    #: largest request body, in bytes (larger: 413); one-click unsubscribe takes at most 1 KiB
    max_body_size: int = 16384
    #: longest request line or header field, in bytes (longer: 400); at most 64 header fields
    max_header_size: int = 8190
    #: serve Prometheus metrics at /metrics on metrics_listen
    metrics: bool = True
    #: the metrics listener, apart from the citizens' (loopback by default, as Postfix's and
    #: Dovecot's exporters): a proxy in front of `listen` never exposes it
    metrics_listen: str = "127.0.0.1:2090"
    #: a scrape must send "Authorization: Bearer <token>"; empty: no token (loopback only!)
    metrics_token: str = ""


@dataclass(frozen=True)
class OIDCConfig:
    """The OpenID Connect provider on the citizens' HTTP listener (issue 14); its issuer is
    ``http.base_url`` (HTTPS in production; http on loopback in development)."""

    #: serve the provider (discovery, sign-in, tokens) and accept its tokens over IMAP and SMTP
    enabled: bool = True
    #: seconds an access token (also the mail clients' OAUTHBEARER token) is valid
    access_token_ttl: int = 3600
    #: seconds a refresh token is valid (each refresh replaces it)
    refresh_token_ttl: int = 30 * 24 * 3600
    #: seconds an authorization code is valid (RFC 6749 4.1.2: short; one use)
    code_ttl: int = 60
    #: seconds an ID token is valid; a rotated signing key stays in the JWKS this long after
    #: the next rotation, so every token it signed can still be verified
    id_token_ttl: int = 3600
    #: a web session ends after this many seconds without a request ...
    session_idle_seconds: int = 1800
    #: ... and in any case this many seconds after sign-in
    session_max_seconds: int = 12 * 3600
    #: web sessions one account may hold; a new sign-in past it ends the oldest
    max_sessions_per_account: int = 20
    #: the portal's redirect URI, under http.base_url (registered by init and db upgrade)
    portal_redirect_path: str = "/portal/callback"
    #: the webmail's (Roundcube's) public URL, where the portal links citizens to read their mail;
    #: `civicmail webmail config` registers client "webmail" for it. Empty: http.base_url + /webmail/
    webmail_url: str = ""


@dataclass(frozen=True)
class CAConfig:
    #: the city CA's issuing key and certificate, the agencies' signing keys and the root
    #: certificate (public), relative to the data directory; `civicmail ca init` makes it
    dir: str = "ca"
    #: the root's private key and certificate, kept apart from everything a server reads (like
    #: the ID-number keys: move it off the machine after `ca init`; only `ca init` uses it)
    root_dir: str = "ca-root"
    #: the CRL distribution point written in every certificate; empty: http.base_url (else
    #: http://http.listen) + /ca/crl.der, the route the citizen-services HTTP listener serves
    crl_url: str = ""
    #: agencies' signing keys: "ec-p256" (measured ~12x faster to sign than RSA, docs/benchmarks.md)
    #: or "rsa-2048" (what the oldest mail clients verify)
    agency_key_type: str = "ec-p256"
    #: citizens' personal keys: "rsa-2048" (every client can also encrypt to it) or "ec-p256"
    citizen_key_type: str = "rsa-2048"
    #: days a certificate issued to an agency / a citizen is valid
    agency_days: int = 825
    citizen_days: int = 825
    #: the pipeline signs each notice (S/MIME, RFC 8551) with its agency's certificate, when the
    #: CA exists and the agency has one; off: notices go unsigned
    sign_notices: bool = True
    #: an agency's mail submitted over SMTP is signed with its certificate the same way (when it
    #: has one and the message is not already signed)
    sign_submissions: bool = False
    #: IMAPS and SMTPS ask for an optional client certificate from the city CA (AUTHENTICATE
    #: EXTERNAL, RFC 4422 appendix A); off: no certificate is asked for
    client_certificates: bool = True


KEY_TYPES = ("ec-p256", "rsa-2048")


@dataclass(frozen=True)
class CheckConfig:
    #: `civicmail check`: a TLS certificate, or a certificate of the city CA (root, issuing CA,
    #: agencies'), expiring within this many days is a warning
    cert_warn_days: int = 30
    #: free space of the data directory's file system, in percent: below the first a warning,
    #: below the second a failure
    disk_warn_percent: float = 10.0
    disk_fail_percent: float = 2.0
    #: age of the oldest message waiting in the outbound queue, in minutes: a warning, a failure
    queue_warn_minutes: int = 60
    queue_fail_minutes: int = 1440
    #: resolvers asked for the MX, SPF and DKIM records ("ip" or "ip:port"); empty: the
    #: system's (/etc/resolv.conf)
    nameservers: tuple[str, ...] = ()
    #: seconds the DNS checks wait for an answer in all
    dns_timeout: float = 5.0


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    city: CityConfig = field(default_factory=CityConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    lmtp: LMTPConfig = field(default_factory=LMTPConfig)
    blobs: BlobsConfig = field(default_factory=BlobsConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    passwords: PasswordConfig = field(default_factory=PasswordConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    smtp: SMTPConfig = field(default_factory=SMTPConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    submissions: SubmissionsConfig = field(default_factory=SubmissionsConfig)
    imap: IMAPConfig = field(default_factory=IMAPConfig)
    imaps: IMAPSConfig = field(default_factory=IMAPSConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    login: LoginConfig = field(default_factory=LoginConfig)
    dkim: DKIMConfig = field(default_factory=DKIMConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    oidc: OIDCConfig = field(default_factory=OIDCConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    ca: CAConfig = field(default_factory=CAConfig)
    #: the file this came from (None for defaults); relative paths resolve against its folder
    source: Path | None = None

    # -- derived paths -----------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        base = self.source.parent if self.source else Path.cwd()
        return (base / self.server.data_dir).resolve()

    def data_path(self, relative: str) -> Path:
        return self.data_dir / relative

    @property
    def external_store(self) -> bool:
        """store.mode = "external": mailboxes live in another server, reached by LMTP."""
        return self.store.mode == "external"

    @property
    def blobs_backend(self) -> str:
        """``blobs.backend``, or by default: "local" on SQLite (one node, the embedded default);
        "database" on PostgreSQL, where several nodes may share the database and a directory
        of one node would hide bodies from the others: choose "s3" (or "local" for one node)."""
        if self.blobs.backend:
            return self.blobs.backend
        return "database" if self.store_url.startswith("postgresql") else "local"

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.data_dir / 'civicmail.sqlite3'}"

    def client_endpoints(self) -> list[tuple[str, str, int, bool]]:
        """The listeners mail clients use, as (protocol, RFC 6186 service name, port, implicit
        TLS), implicit TLS first (what clients should prefer); those switched off are left out.
        Behind the SRV records `init` prints and the autoconfig file the HTTP listener serves."""
        return [(protocol, service, parse_hostport(section.listen, f"{service}.listen")[1], implicit)
                for protocol, service, section, implicit in self._client_listeners()]

    def _client_listeners(self) -> list[tuple[str, str, Any, bool]]:
        # external mode: no IMAP here (the external store serves it), so none is advertised
        return [(protocol, service, section, implicit)
                for protocol, service, section, implicit in (("imap", "imaps", self.imaps, True),
                                                             ("imap", "imap", self.imap, False),
                                                             ("smtp", "submissions", self.submissions, True),
                                                             ("smtp", "submission", self.submission, False))
                if section.listen and not (protocol == "imap" and self.external_store)]

    @property
    def client_host(self) -> str:
        """The host mail clients are told to connect to (the autoconfig file, the SRV records):
        ``server.hostname``, except in development with every client listener on loopback,
        where that name need not resolve: ``localhost`` (which the self-signed certificate
        names), or the one loopback address they share when it is another (127.0.0.2)."""
        hosts = {parse_hostport(section.listen)[0] for _, _, section, _ in self._client_listeners()}
        if not self.server.development or not hosts or not all(map(_is_loopback, hosts)):
            return self.server.hostname
        if len(hosts) == 1 and (host := next(iter(hosts))) not in ("127.0.0.1", "::1", "localhost"):
            return host
        return "localhost"

    @property
    def local_domains(self) -> tuple[str, ...]:
        """The city's domains, in the one form every comparison uses (normalise_domain)."""
        return tuple(normalise_domain(d) for d in (self.city.domain,) + self.city.extra_domains)

    @property
    def templates_dir(self) -> Path:
        if self.delivery.templates_dir:
            return self.data_dir / self.delivery.templates_dir
        return REPO_ROOT / "templates"

    @property
    def webmail_url(self) -> str:
        """Roundcube's public URL (with a trailing slash): ``oidc.webmail_url``, else
        ``public_url`` + ``/webmail/`` (Roundcube behind the same proxy as the portal)."""
        return (self.oidc.webmail_url or self.public_url + "/webmail").rstrip("/") + "/"

    @property
    def public_url(self) -> str:
        """How citizens and mail clients reach the HTTP listener (no trailing slash):
        ``http.base_url``, else http(s)://``http.listen``. The OpenID Connect issuer."""
        if self.http.base_url:
            return self.http.base_url.rstrip("/")
        return f"{'https' if self.http.tls else 'http'}://{self.http.listen}"

    def replace(self, **sections: Any) -> "Config":
        return dataclasses.replace(self, **sections)


LISTENER_SECTIONS = ("smtp", "submission", "submissions", "imap", "imaps", "http")


def _section_types() -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(Config) if f.name != "source"}  # type: ignore[misc]


def _coerce(key: str, value: Any, annotation: str) -> Any:
    """Check one value against its field's annotation; return it in the field's type."""
    if annotation == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected a whole number, got {value!r}")
    if annotation == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if annotation == "str":
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if annotation.startswith("tuple[str"):
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {annotation}")  # pragma: no cover


def _parse_override(text: str) -> tuple[str, str, Any]:
    """``section.key=value``; the value is read as TOML, else taken as a bare string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, key, value


def build(data: Mapping[str, Any], overrides: tuple[str, ...] = (), source: Path | None = None) -> Config:
    merged: dict[str, dict[str, Any]] = {}
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a [{section}] table")
        merged[section] = dict(values)
    for text in overrides:
        section, key, value = _parse_override(text)
        merged.setdefault(section, {})[key] = value
    types = _section_types()
    sections: dict[str, Any] = {}
    for section, values in merged.items():
        if section not in types:
            raise ConfigError(f"{section}: unknown section (known: {', '.join(sorted(types))})")
        cls = types[section]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(f"{section}.{key}: unknown key")
            kwargs[key] = _coerce(f"{section}.{key}", value, str(fields[key].type))
        sections[section] = cls(**kwargs)
    config = Config(**sections, source=source)
    _validate(config)
    return config


def _validate(config: Config) -> None:
    for name in LISTENER_SECTIONS:
        listen = getattr(config, name).listen
        if listen:
            parse_hostport(listen, f"{name}.listen")
    if config.outbound.relay:
        parse_hostport(config.outbound.relay, "outbound.relay")
    for network in config.smtp.trusted_networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"smtp.trusted_networks: {network!r} is not a network (e.g. 192.0.2.0/24)") from None
    domain = config.city.domain
    if not domain or "@" in domain or "." not in domain or " " in domain:
        raise ConfigError(f"city.domain: {domain!r} is not a domain name")
    if config.blobs.backend not in ("", "local", "s3", "database"):
        raise ConfigError(f"blobs.backend: {config.blobs.backend!r} is not one of \"local\", \"s3\", \"database\"")
    if config.blobs.sync not in ("batch", "file"):
        raise ConfigError(f"blobs.sync: {config.blobs.sync!r} is not \"batch\" or \"file\"")
    if config.blobs.pack_min < 0:
        raise ConfigError(f"blobs.pack_min: {config.blobs.pack_min} is below 0 (0: never pack)")
    if config.blobs.backend == "s3" and not config.blobs.bucket:
        raise ConfigError("blobs.bucket: the S3 backend needs a bucket")
    if config.passwords.memory_cost_kib < 8 * config.passwords.parallelism:
        raise ConfigError("passwords.memory_cost_kib: must be at least 8 x parallelism")
    if not 1 <= config.accounts.max_folder_name_length <= FOLDER_NAME_COLUMN:
        raise ConfigError(f"accounts.max_folder_name_length: must be 1 to {FOLDER_NAME_COLUMN} (the store's column)")
    if config.server.event_loop not in ("uvloop", "asyncio"):
        raise ConfigError(f"server.event_loop: {config.server.event_loop!r} is not \"uvloop\" or \"asyncio\"")
    if config.server.workers < 0:
        raise ConfigError("server.workers: must be 0 (one per CPU core) or more")
    _validate_workers(config)
    if config.imap.pg_write_threads < 0:
        raise ConfigError("imap.pg_write_threads: must be 0 (the writes on the store threads) or more")
    if config.imap.loop_read_budget < 0:
        raise ConfigError("imap.loop_read_budget: must be 0 (no reads on the event loop) or more")
    for key in ("heavy_threads", "heavy_jobs_per_user", "pg_write_jobs_per_user", "read_threads", "max_search_depth", "max_search_keys",
                "max_catenate_parts", "notify_max_events", "max_keywords", "max_keyword_length"):
        if getattr(config.imap, key) < 1:
            raise ConfigError(f"imap.{key}: must be at least 1")
    if config.passwords.hash_threads < 0:
        raise ConfigError("passwords.hash_threads: must be 0 (one per CPU core) or more")
    if config.login.cache_size < 0 or config.login.cache_ttl_seconds < 1:
        raise ConfigError("login.cache_size, login.cache_ttl_seconds: must be 0 or more, and at least 1 second")
    if config.delivery.store_retry_seconds < 0:
        raise ConfigError("delivery.store_retry_seconds: must be 0 or more")
    if config.delivery.writer_wal_pages < 1000:
        raise ConfigError("delivery.writer_wal_pages: must be at least 1000 (SQLite's own default)")
    for key in ("delivery.lease_seconds", "outbound.lease_seconds"):
        section, name = key.split(".")
        if getattr(getattr(config, section), name) < 1:
            raise ConfigError(f"{key}: must be at least 1 second")
    for key in ("busy_timeout", "connect_timeout", "statement_timeout", "lookup_timeout", "commit_timeout"):
        if getattr(config.store, key) <= 0:
            raise ConfigError(f"store.{key}: must be more than 0 seconds")
    if not 1 <= config.store.keep_result_rows <= 1_000_000:
        raise ConfigError(f"store.keep_result_rows: must be 1 to 1000000 rows (got {config.store.keep_result_rows})")
    if config.store.prepared_statements < 1:
        raise ConfigError("store.prepared_statements: must be at least 1")
    _validate_external(config)
    if config.store.listen_url and not (config.store.url.startswith("postgresql")
                                        and config.store.listen_url.startswith("postgresql")):
        raise ConfigError("store.listen_url: only for PostgreSQL behind a pooler: store.url (the pooler) and "
                          "store.listen_url (the database directly) must both be postgresql:// URLs")
    if config.server.max_connections < 0:
        raise ConfigError("server.max_connections: must be 0 (from the open-file limit) or more")
    if not config.server.tls_handshake_timeout > 0:
        raise ConfigError("server.tls_handshake_timeout: must be more than 0 seconds")
    if config.imap.preauth_timeout < 1:
        raise ConfigError("imap.preauth_timeout: must be at least 1 second")
    if config.imap.max_preauth_command_size < 1024:
        raise ConfigError("imap.max_preauth_command_size: must be at least 1024 bytes (a LOGIN must fit)")
    check = config.check
    if not 0 <= check.disk_fail_percent <= check.disk_warn_percent <= 100:
        raise ConfigError("check.disk_fail_percent, check.disk_warn_percent: must be 0 <= fail <= warn <= 100")
    if not 0 < check.queue_warn_minutes <= check.queue_fail_minutes:
        raise ConfigError("check.queue_warn_minutes, check.queue_fail_minutes: must be 0 < warn <= fail")
    if check.dns_timeout <= 0:
        raise ConfigError("check.dns_timeout: must be more than 0 seconds")
    for server in check.nameservers:
        nameserver_address(server)
    for key in ("access_token_ttl", "refresh_token_ttl", "code_ttl", "id_token_ttl", "session_idle_seconds",
                "session_max_seconds", "max_sessions_per_account"):
        if getattr(config.oidc, key) < 1:
            raise ConfigError(f"oidc.{key}: must be at least 1")
    if not config.oidc.portal_redirect_path.startswith("/"):
        raise ConfigError("oidc.portal_redirect_path: must start with /")
    if config.http.request_timeout <= 0:
        raise ConfigError("http.request_timeout: must be more than 0 seconds")
    if config.http.max_body_size < 1024:
        raise ConfigError("http.max_body_size: must be at least 1024 bytes (a one-click unsubscribe must fit)")
    if config.http.max_header_size < 1024:
        raise ConfigError("http.max_header_size: must be at least 1024 bytes")
    if config.http.metrics:
        if not config.http.metrics_listen:
            raise ConfigError("http.metrics_listen: must be host:port while http.metrics is on")
        parse_hostport(config.http.metrics_listen, "http.metrics_listen")
    for key in ("agency_key_type", "citizen_key_type"):
        if getattr(config.ca, key) not in KEY_TYPES:
            raise ConfigError(f"ca.{key}: {getattr(config.ca, key)!r} is not one of {', '.join(KEY_TYPES)}")
    if not 1 <= config.ca.agency_days <= 3650 or not 1 <= config.ca.citizen_days <= 3650:
        raise ConfigError("ca.agency_days, ca.citizen_days: must be 1 to 3650")
    if config.server.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"server.log_level: {config.server.log_level!r} is not debug, info, warning or error")


#: the longest a dead worker's replacement may be made to wait, in seconds (server.worker_respawn_max)
RESPAWN_MAX_CEILING = 3600.0


def _validate_workers(config: Config) -> None:
    """The waits of serve's workers: a replacement's (server.worker_respawn_*) and a login's
    place asked of the first process (imap.handoff_ask_timeout)."""
    server = config.server
    if not 0.1 <= server.worker_respawn_delay <= server.worker_respawn_max <= RESPAWN_MAX_CEILING:
        raise ConfigError(f"server.worker_respawn_delay, server.worker_respawn_max: must be 0.1 <= delay <= max <= "
                          f"{RESPAWN_MAX_CEILING:g} seconds (got {server.worker_respawn_delay:g} and "
                          f"{server.worker_respawn_max:g})")
    if not 0 < server.worker_respawn_steady <= 86400:
        raise ConfigError("server.worker_respawn_steady: must be more than 0 and at most 86400 seconds")
    if not 0.1 <= config.imap.handoff_ask_timeout <= 60:
        raise ConfigError("imap.handoff_ask_timeout: must be 0.1 to 60 seconds")


def _validate_external(config: Config) -> None:
    """store.mode, and in external mode the LMTP target it needs."""
    if config.store.mode not in STORE_MODES:
        raise ConfigError(f"store.mode: {config.store.mode!r} is not one of {', '.join(STORE_MODES)}")
    lmtp = config.lmtp
    if config.store.mode == "external" and not lmtp.target:
        raise ConfigError('lmtp.target: store.mode = "external" needs the LMTP server (host:port or unix:/path)')
    if lmtp.target:
        unix = lmtp_unix_path(lmtp.target)
        if unix is None:
            parse_hostport(lmtp.target, "lmtp.target")
        elif not unix.startswith("/"):
            raise ConfigError(f"lmtp.target: {lmtp.target!r}: a unix socket needs an absolute path (unix:/path)")
        elif lmtp.starttls:
            raise ConfigError("lmtp.starttls: STARTTLS is for a TCP target, not a unix socket")
    if lmtp.connections < 1 or lmtp.max_recipients < 1:
        raise ConfigError("lmtp.connections, lmtp.max_recipients: must be at least 1")
    if lmtp.timeout <= 0 or lmtp.retry_seconds < 0 or lmtp.deferred_retry_seconds < 0:
        raise ConfigError("lmtp.timeout, lmtp.retry_seconds, lmtp.deferred_retry_seconds: must be more than 0, "
                          "0 or more, 0 or more seconds")


def lmtp_unix_path(target: str) -> str | None:
    """The socket path of a "unix:/path" LMTP target; None for host:port."""
    return target[len("unix:"):] if target.startswith("unix:") else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: only the operator knows where it points
        return False


def parse_hostport(value: str, key: str = "listen") -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` to (host, port); the error names the key."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: {value!r} is not host:port")
    return host.strip("[]"), int(port)


def nameserver_address(value: str) -> tuple[str, int]:
    """A resolver's "ip", "ip:port" or "[ipv6]:port" to (ip, port); port 53 if none is given."""
    host, port = parse_hostport(value, "check.nameservers") if value.startswith("[") or value.count(":") == 1 \
        else (value, 53)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"check.nameservers: {value!r} is not an IP address (with an optional :port)") from None
    return host, port


def find_config_path(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get("CIVICMAIL_CONFIG")
    if env:
        return Path(env)
    local = Path("civicmail.toml")
    return local if local.exists() else None


def load(path: Path | None, overrides: tuple[str, ...] = ()) -> Config:
    if path is None:
        return build({}, overrides)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return build(data, overrides, source=path.resolve())
