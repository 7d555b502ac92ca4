"""Mailbox commands: SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST
(LIST-EXTENDED, LIST-STATUS, SPECIAL-USE, CHILDREN), LSUB, STATUS, APPEND (APPENDUID,
APPENDLIMIT, MULTIAPPEND, BINARY and UTF8 literals, CATENATE), GETQUOTA, GETQUOTAROOT, SETQUOTA, CLOSE, UNSELECT."""
from __future__ import annotations

from ..errors import NotFound
from ..mime.binary import without_nul
from ..store import api
from . import parser as P
from . import responses as R
from .catenate import assemble
from .codec import format_uid_set
from .commands import Append, Command, GetQuota, ListCmd, MailboxCommand, Rename, Status
from .handlers_message import CONDSTORE, QRESYNC, UIDPLUS, send_changed_since, send_vanished_earlier
from .listing import list_line, listing
from .listmatch import ListPatterns
from .objectid import mailbox_id
from .registry import AUTHED, SEL, Cap, command
from .responses import Reply
from .selected import SelectedFolder, keywords_refused, split_flags
from .session import ImapSession

#: bytes of one APPEND's message past which its write is ``big`` (on PostgreSQL's write lane,
#: ServerContext.run_write: it runs on the store threads, as several messages at once do)
BIG_APPEND = 1 << 20
#: RFC 7889: the largest APPEND this server takes
APPENDLIMIT = Cap("APPENDLIMIT", show=lambda s: f"APPENDLIMIT={s.config.imap.max_literal_size}")


@command("SELECT", AUTHED, P.select, cap=(CONDSTORE, QRESYNC), expunge=True)
@command("EXAMINE", AUTHED, P.select, expunge=True)
async def do_select(s: ImapSession, cmd: MailboxCommand) -> Reply:
    readonly = cmd.verb == "EXAMINE"
    if cmd.qresync is not None and not s.qresync:
        return R.BAD_NO_QRESYNC  # RFC 7162 3.2.5
    if cmd.condstore:
        s.condstore = True
    if s.selected is not None:
        # RFC 3501: a failed SELECT leaves no mailbox selected; RFC 7162 3.2.11: [CLOSED]
        # tells the client where the old mailbox's responses end
        s.close_selected()
        await s.untagged(R.OK_CLOSED.line())
    # IMAP4rev2 (RFC 9051 E.6): no \Recent, so nothing is claimed, no RECENT nor [UNSEEN n] sent
    claims = not readonly and not s.rev2
    serial = s.ctx.hub.serial()  # before the snapshot: see ImapSession.select
    snap = await s.ctx.run_read(s.store.select, s.account_id, cmd.mailbox, not claims, False)
    if claims and snap.unclaimed:  # messages no session has seen as \Recent: claim them (a write)
        snap = await s.ctx.run_write(s.store.claim_snapshot, snap, flags_only=True, owner=s.account_id)
    sel = SelectedFolder.from_snapshot(s.account_id, snap, readonly, s.rev2, s.config.imap.max_keywords)
    for line in sel.flags_responses():
        await s.untagged(line)
    await s.untagged(f"{sel.exists} EXISTS")
    if not s.rev2:
        await s.untagged(f"{snap.recent} RECENT")
    if snap.first_unseen_uid is not None and not s.rev2:
        seq = sel.seq_of(snap.first_unseen_uid)
        if seq:
            await s.untagged(f"OK [UNSEEN {seq}] first unseen")
    await s.untagged(f"OK [UIDVALIDITY {snap.folder.uidvalidity}] UIDs valid")
    await s.untagged(f"OK [UIDNEXT {snap.folder.uidnext}] predicted next UID")
    await s.untagged(R.OK_HIGHESTMODSEQ.with_code(f"HIGHESTMODSEQ {snap.folder.highestmodseq}").line())
    await s.untagged(R.OK_MAILBOXID.with_code(f"MAILBOXID ({mailbox_id(snap.folder.id, snap.folder.uidvalidity)})")
                     .line())
    if s.rev2:
        # RFC 9051 6.3.2: a LIST response with the mailbox name and its attributes
        listed = await s.ctx.run(listing, s.store, s.account_id, ListCmd(cmd.tag, "", (snap.folder.name,)))
        for x in listed:
            if x.name == snap.folder.name:
                await s.untagged(list_line("LIST", x.attrs, s.mailbox_wire(x.name)))
    s.select(sel, serial)
    q = cmd.qresync
    if q is not None and q.uidvalidity == sel.uidvalidity:
        # RFC 7162 3.2.5: what the client missed since it last saw ``q.modseq``
        await send_vanished_earlier(s, sel, q.modseq, q.known_uids)
        await send_changed_since(s, sel, q.modseq, q.known_uids)
    return R.OK_SELECT_RO if readonly else R.OK_SELECT_RW


@command("CREATE", AUTHED, P.create, cap="CREATE-SPECIAL-USE", expunge=True)
async def do_create(s: ImapSession, cmd: MailboxCommand) -> Reply:
    """RFC 3501 6.3.3, RFC 6154 5.2 (USE), RFC 8474 4.1 (the new folder's MAILBOXID)."""
    made = await s.ctx.run(s.store.create_folder, s.account_id, cmd.mailbox, s.config.accounts, cmd.use)
    return R.OK_DONE.with_code(f"MAILBOXID ({mailbox_id(made.id, made.uidvalidity)})")


@command("DELETE", AUTHED, P.one_mailbox, expunge=True)
async def do_delete(s: ImapSession, cmd: MailboxCommand) -> Reply:
    if s.selected is not None and s.selected.name == cmd.mailbox:
        s.close_selected()
    try:
        await s.ctx.run(s.store.delete_folder, s.account_id, cmd.mailbox)
    except api.HasChildFolders:
        return R.NO_HASCHILDREN
    return R.OK_DONE


@command("RENAME", AUTHED, P.rename, expunge=True)
async def do_rename(s: ImapSession, cmd: Rename) -> Reply:
    await s.ctx.run(s.store.rename_folder, s.account_id, cmd.old, cmd.new, s.config.accounts)
    return R.OK_DONE


@command("SUBSCRIBE", AUTHED, P.one_mailbox, expunge=True)
async def do_subscribe(s: ImapSession, cmd: MailboxCommand) -> Reply:
    """RFC 3501 6.3.6: any name, whether or not a folder has it (a list of its own)."""
    await s.ctx.run(s.store.subscribe, s.account_id, cmd.mailbox, s.config.accounts)
    return R.OK_DONE


@command("UNSUBSCRIBE", AUTHED, P.one_mailbox, expunge=True)
async def do_unsubscribe(s: ImapSession, cmd: MailboxCommand) -> Reply:
    await s.ctx.run(s.store.unsubscribe, s.account_id, cmd.mailbox)
    return R.OK_DONE


def _status_items(st: api.FolderStatus, items: tuple[str, ...]) -> str:
    values = {"MESSAGES": st.info.message_count, "RECENT": st.recent, "UIDNEXT": st.info.uidnext,
              "UIDVALIDITY": st.info.uidvalidity, "UNSEEN": st.unseen, "SIZE": st.info.total_size,
              "HIGHESTMODSEQ": st.info.highestmodseq, "DELETED": st.deleted,
              "MAILBOXID": f"({mailbox_id(st.info.id, st.info.uidvalidity)})"}
    return " ".join(f"{i} {values[i]}" for i in items)


@command("LIST", AUTHED, P.list_, cap=("CHILDREN", "SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS"), expunge=True)
@command("LSUB", AUTHED, P.list_, expunge=True)
async def do_list(s: ImapSession, cmd: ListCmd) -> Reply:
    verb = "LSUB" if cmd.lsub else "LIST"
    if not cmd.lsub and cmd.patterns == ("",) and not cmd.select_opts:
        await s.untagged(f'LIST (\\Noselect) "{R.SEP}" ""')
        return R.OK_DONE
    # wildcards (but a lone "*") cost CPU in proportion to the names: the heavy lane for them
    costly = ListPatterns(cmd.reference, cmd.patterns).costly
    listed = await (s.heavy if costly else s.ctx.run_read)(listing, s.store, s.account_id, cmd)
    statuses = {}
    folders = [x.name for x in listed if x.exists]
    if cmd.status_items and folders:
        for st in await s.ctx.run_read(s.store.folder_status, s.account_id, folders):
            statuses[st.info.name] = st
    for x in listed:
        line = list_line(verb, x.attrs, s.mailbox_wire(x.name))
        if x.childinfo:
            line += ' ("CHILDINFO" (' + " ".join(f'"{c}"' for c in x.childinfo) + "))"
        await s.untagged(line)
        if x.name in statuses:
            await s.untagged(f"STATUS {s.mailbox_wire(x.name)} ({_status_items(statuses[x.name], cmd.status_items)})")
    return R.OK_DONE


@command("STATUS", AUTHED, P.status, cap="STATUS=SIZE", expunge=True)
async def do_status(s: ImapSession, cmd: Status) -> Reply:
    if "HIGHESTMODSEQ" in cmd.items:
        await s.enable_condstore()
    found = await s.ctx.run_read(s.store.folder_status, s.account_id, [cmd.mailbox])
    if not found:
        return R.NO_NONEXISTENT
    await s.untagged(f"STATUS {s.mailbox_wire(cmd.mailbox)} ({_status_items(found[0], cmd.items)})")
    return R.OK_DONE


@command("APPEND", AUTHED, P.append, cap=(UIDPLUS, APPENDLIMIT, "MULTIAPPEND", "CATENATE"), expunge=True)
async def do_append(s: ImapSession, cmd: Append) -> Reply:
    """APPEND, and RFC 3502 MULTIAPPEND: every message is checked, then all are stored in one
    transaction or none is; APPENDUID names them all (RFC 4315). RFC 4469 CATENATE: a message is
    first joined from its literals and URLs (a bad URL: NO [BADURL], nothing stored)."""
    imap = s.config.imap
    sel = s.selected
    into_selected = sel is not None and sel.name == cmd.mailbox
    # each message's keywords within the bounds; into the selected folder, all of them with the folder's
    wanted = [split_flags(m.flags)[1] for m in cmd.messages]
    bounds = imap.max_keywords, imap.max_keyword_length
    if any(keywords_refused(set(), w, *bounds) for w in wanted) or (
            into_selected and keywords_refused(sel.keywords, set().union(*wanted), *bounds)):
        return s.keyword_limit()
    raws = []
    held = sum(len(m.message) for m in cmd.messages)  # joined messages stay in the APPEND's bound
    for m in cmd.messages:
        if m.catenate is None:
            raws.append(m.message)
            continue
        selected = s.selected.name if s.selected is not None else None
        raws.append(await s.heavy(assemble, s.store, s.account_id, s.principal.login, selected, m.catenate,
                                  min(imap.max_literal_size, imap.max_multiappend_size - held)))
        held += len(raws[-1])
    if any(len(raw) > imap.max_literal_size for raw in raws) or sum(map(len, raws)) > imap.max_multiappend_size:
        return R.NO_TOOBIG
    if any(not raw for raw in raws):
        return R.NO_EMPTY_MESSAGE
    items = []
    for m, raw in zip(cmd.messages, raws):
        if (m.binary or any(p.binary for p in m.catenate or ())) and b"\0" in raw:
            raw = await s.heavy(without_nul, raw)  # RFC 3516 4.4: NUL parts become base64
        bits, keywords = split_flags(m.flags)
        items.append(api.ToAppend(raw, bits, " ".join(sorted(set(keywords))) or None, m.date))
    # parsed and the bodies stored beside the write lane, as work whose cost the client chooses:
    # the lane's one thread (every writer of the process, on SQLite) waits only for the rows
    prepared = await s.heavy(s.store.prepare_append, s.account_id, cmd.mailbox, items)
    try:
        done = await s.run_looking(s.store.append, s.account_id, cmd.mailbox, prepared,
                                   s.config.accounts.quota_bytes, into_selected and not sel.readonly,
                                   big=len(raws) > 1 or len(raws[0]) > BIG_APPEND)
    except NotFound:
        return R.NO_TRYCREATE
    if into_selected:
        if done.recent:
            sel.note_recent(done.uids[0] - 1, done.uids[-1])
        s.pending = True
    return R.OK_DONE.with_code(f"APPENDUID {done.uidvalidity} {format_uid_set(done.uids)}")


async def _quota_lines(s: ImapSession) -> None:
    usage = await s.ctx.run_read(s.store.quota, s.account_id, s.config.accounts.quota_bytes)
    await s.untagged(f'QUOTA "" (STORAGE {(usage.used + 1023) // 1024} {usage.limit // 1024})')


@command("GETQUOTAROOT", AUTHED, P.one_mailbox, cap=("QUOTA", "QUOTA=RES-STORAGE"), expunge=True)
async def do_getquotaroot(s: ImapSession, cmd: MailboxCommand) -> Reply:
    await s.ctx.run_read(s.store.find_folder, s.account_id, cmd.mailbox)
    await s.untagged(f'QUOTAROOT {s.mailbox_wire(cmd.mailbox)} ""')
    await _quota_lines(s)
    return R.OK_DONE


@command("GETQUOTA", AUTHED, P.getquota, expunge=True)
async def do_getquota(s: ImapSession, cmd: GetQuota) -> Reply:
    if cmd.root != "":
        return R.NO_QUOTAROOT
    await _quota_lines(s)
    return R.OK_DONE


@command("SETQUOTA", AUTHED, P.setquota, expunge=True)
async def do_setquota(s: ImapSession, cmd: Command) -> Reply:
    return R.NO_SETQUOTA


@command("CLOSE", SEL, P.no_args, expunge=True)
async def do_close(s: ImapSession, cmd: Command) -> Reply:
    sel = s.selected
    s.close_selected()
    if sel is not None and not sel.readonly:
        # silently (RFC 3501 6.4.2)
        await s.ctx.run_write(s.store.expunge, sel.account_id, sel.folder_id, owner=s.account_id)
    return R.OK_DONE


@command("UNSELECT", SEL, P.no_args, cap="UNSELECT", expunge=True)
async def do_unselect(s: ImapSession, cmd: Command) -> Reply:
    s.close_selected()
    return R.OK_DONE
