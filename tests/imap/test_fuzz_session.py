"""Nothing a client sends crashes a session: generated command lines against a live server, in
the selected state, must each get a tagged answer that is never an internal error."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from mailserver.store.mailstore import deliver


VERBS = ["FETCH", "UID FETCH", "STORE", "UID STORE", "SEARCH", "UID SEARCH", "COPY", "UID COPY", "MOVE", "UID MOVE",
         "EXPUNGE", "UID EXPUNGE", "LIST", "LSUB", "STATUS", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME",
         "SUBSCRIBE", "NOOP", "CHECK", "GETQUOTAROOT", "GETQUOTA", "ENABLE", "ID", "NAMESPACE", "APPEND"]
ATOMS = ["1", "*", "1:*", "2:3", "4294967295", "0", "1,3:*", "FLAGS", "(FLAGS)", "(UID RFC822.SIZE)",
         "BODY[]", "BODY.PEEK[1.2.MIME]", "BODY[HEADER.FIELDS (FROM)]<0.5>", "(BODYSTRUCTURE ENVELOPE)", "+FLAGS",
         "-FLAGS.SILENT", r"(\Seen \Deleted)", "($kw)", "INBOX", "Archive", '""', '"*"', "%", "(MESSAGES UNSEEN)",
         "ALL", "NOT", "OR", "SEEN", "SUBJECT", '"违法"', "CHARSET", "UTF-8", "UID", "BEFORE", "1-Jan-2020",
         "LARGER", "10", "HEADER", "X-A", "(", ")", "NIL", "RETURN", "(SPECIAL-USE)", "{3+}\r\nabc", "Trash", "New/Sub"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(VERBS), st.lists(st.sampled_from(ATOMS), max_size=5)), min_size=1,
                max_size=8))
def test_generated_sessions_never_break_the_server(server, commands):
    deliver(server.ctx.store, b"Subject: x\r\n\r\nbody\r\n", [server.users[0][1]])
    raw = server.raw()
    try:
        assert raw.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
        for i, (verb, args) in enumerate(commands):
            lines = raw.command(f"f{i}", " ".join([verb] + args))
            assert lines[-1].startswith(f"f{i} ".encode()), lines
            assert not any(b"SERVERBUG" in line for line in lines), lines
            if any(line.startswith(b"* BYE") for line in lines):
                return  # e.g. the selected folder was deleted: a clean end
        assert raw.command("n", "NOOP")[-1].startswith(b"n OK")
    finally:
        raw.close()
