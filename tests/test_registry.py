"""The real-name registry on both engines: one account per citizen, ID numbers never in clear."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import MetaData, select

from mailserver.errors import AuthenticationFailed, Conflict, NotFound, ValidationError
from mailserver.identity import idnumber
from mailserver.registry.agencies import add_agency, grant, list_agencies, set_agency_password
from mailserver.registry.auth import authenticate
from mailserver.registry.citizens import activate, add_citizen, disable_account, set_password, show_citizen
from mailserver.registry.stats import stats
from mailserver.store.models import Account, Folder

NUMBER = "11010519491231002X"
OTHER = "440524188001010014"


def all_stored_values(store):
    """Every value in every table, as text and bytes."""
    meta = MetaData()
    meta.reflect(store.engine)
    with store.engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(table.select()):
                yield from row


def test_add_citizen_opens_one_account_with_every_folder(registry, store):
    made = add_citizen(registry, "张伟", NUMBER, "13800000001", password="a long password")
    assert made.address == "zhang.wei@hz.example.cn" and made.activation_code is None
    with store.reader() as s:
        account = s.scalar(select(Account).where(Account.address == made.address))
        assert account.state == "active" and account.password_hash.startswith("$argon2id$")
        folders = dict(s.execute(select(Folder.name, Folder.special_use).where(Folder.account_id == account.id)).all())
    assert folders == {"INBOX": None, "Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk",
                       "Archive": "\\Archive"}


def test_same_name_gets_a_numbered_address(registry):
    assert add_citizen(registry, "张伟", NUMBER).address == "zhang.wei@hz.example.cn"
    assert add_citizen(registry, "张伟", OTHER).address == "zhang.wei2@hz.example.cn"
    third = idnumber.make("330106", dt.date(1990, 1, 1), 7)
    # an operator took zhang.wei3 by hand: the derivation steps over it
    fourth = idnumber.make("330106", dt.date(1990, 1, 2), 8)
    assert add_citizen(registry, "李四", fourth, address="zhang.wei3").address == "zhang.wei3@hz.example.cn"
    assert add_citizen(registry, "张伟", third).address == "zhang.wei4@hz.example.cn"


def test_duplicate_id_number_is_refused(registry):
    add_citizen(registry, "张伟", NUMBER)
    with pytest.raises(Conflict, match="already registered"):
        add_citizen(registry, "王芳", NUMBER.lower())  # the same number, lower-case x
    assert stats(registry).citizens_registered == 1


def test_invalid_id_number_is_refused(registry):
    with pytest.raises(ValidationError, match="checksum"):
        add_citizen(registry, "张伟", "110105194912310021")


def test_taken_address_and_foreign_domain_are_refused(registry):
    add_citizen(registry, "张伟", NUMBER, address="wei")
    with pytest.raises(Conflict, match="already taken"):
        add_citizen(registry, "王芳", OTHER, address="wei@hz.example.cn")
    with pytest.raises(ValidationError, match="not one of this city's domains"):
        add_citizen(registry, "王芳", OTHER, address="wang@gmail.com")


def test_id_number_never_stored_in_clear(registry, store, config):
    add_citizen(registry, "张伟", NUMBER, "13800000001", password="a long password")
    add_citizen(registry, "王芳", OTHER)
    show_citizen(registry, NUMBER)
    for value in all_stored_values(store):
        blob = value if isinstance(value, bytes) else str(value).encode()
        for number in (NUMBER, OTHER):
            assert number.encode() not in blob and number[:17].encode() not in blob
    if store.dialect == "sqlite":
        store.dispose()  # checkpoint nothing away: read the database and its WAL as they lie on disk
        for path in config.data_dir.glob("civicmail.sqlite3*"):
            data = path.read_bytes()
            for number in (NUMBER, OTHER):
                assert number[:17].encode() not in data, path.name
                assert number[:17].encode("utf-16-le") not in data


def test_show_by_address_or_number_masks_the_number(registry):
    add_citizen(registry, "张伟", NUMBER, "13800000001")
    by_address = show_citizen(registry, "zhang.wei@hz.example.cn")
    by_number = show_citizen(registry, NUMBER)
    assert by_address == by_number
    assert by_address.id_masked == "110*************2X" and by_address.state == "pending"
    with pytest.raises(NotFound):
        show_citizen(registry, OTHER)


def test_activation_sets_the_first_password_once(registry):
    made = add_citizen(registry, "张伟", NUMBER)
    assert made.activation_code
    with pytest.raises(AuthenticationFailed):
        authenticate(registry, made.address, "anything at all")  # pending accounts cannot log in
    with pytest.raises(AuthenticationFailed):
        activate(registry, made.address, "AAAA-BBBB-CCCC-DDDD", "a new password")
    activate(registry, made.address, made.activation_code.lower(), "a new password")
    assert authenticate(registry, made.address, "a new password").address == made.address
    with pytest.raises(AuthenticationFailed):  # used
        activate(registry, made.address, made.activation_code, "another password")


def test_password_change_disable_and_authenticate(registry):
    made = add_citizen(registry, "张伟", NUMBER, password="first password")
    principal = authenticate(registry, "Zhang.Wei@hz.example.cn", "first password")
    assert principal.kind == "citizen" and principal.may_send_from("zhang.wei@hz.example.cn")
    assert not principal.may_send_from("wang.fang@hz.example.cn")
    set_password(registry, made.address, "second password")
    with pytest.raises(AuthenticationFailed):
        authenticate(registry, made.address, "first password")
    assert authenticate(registry, made.address, "second password")
    disable_account(registry, made.address)
    with pytest.raises(AuthenticationFailed):
        authenticate(registry, made.address, "second password")
    with pytest.raises(AuthenticationFailed):
        authenticate(registry, "nobody@hz.example.cn", "second password")
    assert stats(registry).accounts_disabled == 1


def test_agencies_senders_grants_and_login(registry):
    from mailserver.provision import sync_catalog

    sync_catalog(registry)
    view = add_agency(registry, "traffic-police", "示例市公安局交通警察支队", ["traffic-police", "jj@hz.example.cn"],
                      password="agency password")
    assert view.mailbox == "traffic-police@hz.example.cn"
    assert grant(registry, "traffic-police", ["licence-renewal", "overdue-fine"]) == ["licence-renewal", "overdue-fine"]
    assert grant(registry, "traffic-police", ["licence-renewal"]) == []
    with pytest.raises(NotFound, match="no notice type"):
        grant(registry, "traffic-police", ["no-such-type"])
    with pytest.raises(Conflict):
        add_agency(registry, "traffic-police", "again", ["tp2"])
    with pytest.raises(ValidationError):
        add_agency(registry, "Bad Id", "x", ["x"])
    (listed,) = list_agencies(registry)
    assert listed.grants == ("licence-renewal", "overdue-fine")
    assert listed.senders == ("jj@hz.example.cn", "traffic-police@hz.example.cn")
    by_id = authenticate(registry, "traffic-police", "agency password")
    by_mailbox = authenticate(registry, "traffic-police@hz.example.cn", "agency password")
    assert by_id.is_agency and by_mailbox.is_agency and by_id.grants == {"licence-renewal", "overdue-fine"}
    assert by_id.may_send_from("jj@hz.example.cn") and not by_id.may_send_from("housing-fund@hz.example.cn")
    set_agency_password(registry, "traffic-police", "new agency password")
    with pytest.raises(AuthenticationFailed):
        authenticate(registry, "traffic-police", "agency password")
    assert authenticate(registry, "traffic-police", "new agency password").agency_id == "traffic-police"
