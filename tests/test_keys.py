"""Rotating the ID-number encryption key on both engines: every row still reads the same number,
lookups still work, a crash midway loses nothing, old versions are retired only when unused."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select, update

from mailserver.identity.rowseal import seal_row, unseal_row
from mailserver.errors import Conflict, UserError
from mailserver.identity import idnumber
from mailserver.identity.keys import IdKeyring, key_file_lock, version_of
from mailserver.registry import Registry
from mailserver.registry.citizens import activate, add_citizen, find_citizen_by_id_number, show_citizen
from mailserver.registry.keys import key_status, keys_dir, retire, rotate
from mailserver.store.models import Agency, AuditLog, Citizen, Drop, DropRow

from test_cli import civicmail

NUMBERS = [idnumber.make("330106", dt.date(1980, 1, 1) + dt.timedelta(days=i), 10 + i) for i in range(7)]
NAMES = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏"]
ROW_CELLS = [{"name": "张伟", "id_number": NUMBERS[0], "fine": "200"},
             {"name": "无名", "id_number": "330106199001010017", "fine": "50"}]


def keyfile(config):
    return keys_dir(config) / "idnumber.json"


def populate(registry, store) -> dict[str, str]:
    """The citizens (number by address) and a drop with two sealed rows, all on the first key."""
    made = {add_citizen(registry, name, number).address: number for name, number in zip(NAMES, NUMBERS)}
    ring = registry.keyring
    with store.session() as s:
        s.add(Agency(id="traffic-police", name="示例市公安局交通警察支队"))
        s.flush()
        drop = Drop(agency_id="traffic-police", notice_type_id="overdue-fine", filename="fines.csv", sha256="0" * 64)
        s.add(drop)
        s.flush()
        for line, cells in enumerate(ROW_CELLS, start=2):
            s.add(DropRow(drop_id=drop.id, line=line, status="unmatched", data=seal_row(ring, cells)))
        s.add(DropRow(drop_id=drop.id, line=4, status="delivered", data=None))  # no data kept: not counted
    return made


def citizen_ciphers(store) -> dict[int, bytes]:
    with store.reader() as s:
        return {i: bytes(c) for i, c in s.execute(select(Citizen.id, Citizen.id_cipher))}


def drop_blobs(store) -> dict[int, bytes]:
    with store.reader() as s:
        return {i: bytes(d) for i, d in s.execute(select(DropRow.id, DropRow.data).where(DropRow.data.is_not(None)))}


def set_cipher(store, citizen_id: int, blob: bytes) -> None:
    with store.session() as s:
        s.execute(update(Citizen).where(Citizen.id == citizen_id).values(id_cipher=blob))


def assert_no_id_number(text: str) -> None:
    for number in NUMBERS + [c["id_number"] for c in ROW_CELLS]:
        assert number[:17] not in text and number[-12:] not in text


def test_rotate_reencrypts_every_row_and_lookups_still_work(config, registry, store):
    made = populate(registry, store)
    old_ring = registry.keyring
    # an account waiting for activation: its code is keyed with the MAC key, which must not change
    waiting = add_citizen(registry, "孙丽", idnumber.make("110105", dt.date(1970, 5, 5), 123))
    before_ciphers = citizen_ciphers(store)
    before_rows = drop_blobs(store)

    report = rotate(registry, batch_size=3)

    assert report.added and report.version == 2 and report.versions == [1, 2]
    assert dict(report.reencrypted["citizen ID numbers"]) == {1: len(NUMBERS) + 1}
    assert dict(report.reencrypted["sealed drop rows"]) == {1: 2}
    on_disk = IdKeyring.load(keys_dir(config))
    assert on_disk.current == 2 and sorted(on_disk.enc_keys) == [1, 2]
    assert on_disk.enc_keys[1] == old_ring.enc_keys[1] and on_disk.mac_key == old_ring.mac_key
    assert on_disk.enc_keys[2] != old_ring.enc_keys[1]
    assert json.loads(keyfile(config).read_text())["current"] == 2

    after = citizen_ciphers(store)
    assert after.keys() == before_ciphers.keys()
    for cid, blob in after.items():
        assert version_of(blob) == 2 and blob != before_ciphers[cid]
        assert on_disk.decrypt(blob) == old_ring.decrypt(before_ciphers[cid])
    with pytest.raises(KeyError):  # the old ring alone can no longer read them: really re-encrypted
        old_ring.decrypt(next(iter(after.values())))
    rows = drop_blobs(store)
    assert rows.keys() == before_rows.keys()
    for rid, blob in rows.items():
        assert version_of(blob) == 2 and unseal_row(on_disk, blob) == unseal_row(old_ring, before_rows[rid])

    fresh = Registry(config, store)  # a process started after the rotation
    for address, number in made.items():
        assert show_citizen(fresh, number).address == address
        assert show_citizen(fresh, address).id_masked == idnumber.mask(number)
        with fresh.store.reader() as s:
            assert find_citizen_by_id_number(fresh, s, number.lower()).id_cipher == after[
                find_citizen_by_id_number(fresh, s, number).id]
    with pytest.raises(Conflict, match="already registered"):
        add_citizen(fresh, "别人", NUMBERS[3])
    late = add_citizen(fresh, "周杰", idnumber.make("440524", dt.date(2000, 2, 2), 77))
    with store.reader() as s:
        newest = s.scalar(select(Citizen.id_cipher).order_by(Citizen.id.desc()).limit(1))
    assert version_of(newest) == 2 and fresh.keyring.decrypt(newest)[:6] == "440524" and late.activation_code
    # the registry that rotated writes with the new version too
    assert version_of(registry.keyring.encrypt(NUMBERS[0])) == 2
    # an activation code issued before the rotation still works (the MAC key was kept)
    activate(fresh, waiting.address, waiting.activation_code, "a long enough password")
    assert show_citizen(fresh, waiting.address).state == "active"


def test_rerun_after_a_crash_touches_only_rows_on_the_old_version(config, registry, store):
    made = populate(registry, store)
    old_ring = registry.keyring

    class Crash(Exception):
        pass

    def crash_after_first_batch(n):
        raise Crash

    with pytest.raises(Crash):
        rotate(registry, batch_size=3, progress=crash_after_first_batch)
    ring = IdKeyring.load(keys_dir(config))
    midway = citizen_ciphers(store)
    assert sorted(version_of(b) for b in midway.values()) == [1] * (len(NUMBERS) - 3) + [2] * 3
    assert sorted(ring.decrypt(b) for b in midway.values()) == sorted(made.values())  # all readable

    resumed = rotate(registry, batch_size=3)
    assert not resumed.added and resumed.version == 2 and resumed.versions == [1, 2]
    assert dict(resumed.reencrypted["citizen ID numbers"]) == {1: len(NUMBERS) - 3}
    after = citizen_ciphers(store)
    for cid, blob in midway.items():
        assert version_of(after[cid]) == 2
        assert (after[cid] == blob) == (version_of(blob) == 2)  # rows already done were left alone

    # rows put back on the old version (as a server not yet restarted would write them)
    ids = sorted(after)
    for cid in ids[1:3]:
        set_cipher(store, cid, old_ring.encrypt(ring.decrypt(after[cid])))
    reset = citizen_ciphers(store)
    again = rotate(registry, batch_size=3)
    assert not again.added and dict(again.reencrypted["citizen ID numbers"]) == {1: 2}
    assert dict(again.reencrypted["sealed drop rows"]) == {}
    final = citizen_ciphers(store)
    assert [cid for cid in ids if final[cid] != reset[cid]] == ids[1:3]
    assert all(version_of(b) == 2 for b in final.values())
    assert {ring.decrypt(final[cid]) for cid in ids} == set(made.values())
    assert sorted(IdKeyring.load(keys_dir(config)).enc_keys) == [1, 2]  # no key added by the reruns

    # nothing left on an old version: the next run is a new rotation
    assert rotate(registry).version == 3


def test_retire_refuses_while_a_row_uses_an_old_version_then_works(config, registry, store):
    made = populate(registry, store)
    old_ring = registry.keyring
    assert retire(registry).removed == []  # only the current version: nothing to do
    rotate(registry, batch_size=4)
    ring = IdKeyring.load(keys_dir(config))
    cid = min(citizen_ciphers(store))
    with store.reader() as s:
        number = ring.decrypt(s.scalar(select(Citizen.id_cipher).where(Citizen.id == cid)))
    set_cipher(store, cid, old_ring.encrypt(number))
    before = keyfile(config).read_bytes()
    with pytest.raises(UserError, match="1 on version 1") as refused:
        retire(registry)
    assert_no_id_number(str(refused.value))
    assert keyfile(config).read_bytes() == before

    rotate(registry)  # carries on: that one row
    rid = min(drop_blobs(store))  # a sealed drop row on the old version blocks retiring as well
    with store.session() as s:
        s.execute(update(DropRow).where(DropRow.id == rid).values(data=seal_row(old_ring, ROW_CELLS[0])))
    with pytest.raises(UserError, match="sealed drop rows: 1 on version 1"):
        retire(registry)
    assert keyfile(config).read_bytes() == before

    rotate(registry)
    done = retire(registry)
    assert done.removed == [1] and done.versions == [2] and done.current == 2
    ring = IdKeyring.load(keys_dir(config))
    assert sorted(ring.enc_keys) == [2] and ring.mac_key == old_ring.mac_key
    fresh = Registry(config, store)
    for address, number in made.items():
        assert show_citizen(fresh, number).address == address
    assert {json.dumps(unseal_row(ring, b), sort_keys=True) for b in drop_blobs(store).values()} == {
        json.dumps(c, sort_keys=True) for c in ROW_CELLS}
    assert retire(registry).removed == []
    with pytest.raises(ValueError):
        ring.without([ring.current])
    with store.reader() as s:
        audit = s.execute(select(AuditLog.action, AuditLog.detail).where(AuditLog.action.like("keys.%"))
                          .order_by(AuditLog.id)).all()
    assert [a for a, _ in audit] == ["keys.rotate", "keys.rotate-continue", "keys.rotate-continue", "keys.retire"]
    assert_no_id_number(" ".join(d for _, d in audit))


def test_status_counts_rows_per_version(config, registry, store):
    populate(registry, store)
    st = key_status(registry)
    assert (st.current, st.versions, st.missing) == (1, [1], [])
    assert dict(st.usage["citizen ID numbers"]) == {1: len(NUMBERS)}
    assert dict(st.usage["sealed drop rows"]) == {1: 2}
    old_ring = registry.keyring
    rotate(registry)
    ciphers = citizen_ciphers(store)
    for cid in sorted(ciphers)[:3]:
        set_cipher(store, cid, old_ring.encrypt(NUMBERS[0]))
    st = key_status(registry)
    assert (st.current, st.versions) == (2, [1, 2])
    assert dict(st.usage["citizen ID numbers"]) == {1: 3, 2: len(NUMBERS) - 3}
    assert dict(st.usage["sealed drop rows"]) == {2: 2}


def test_a_second_keys_command_waits_for_none(config, registry, store):
    populate(registry, store)
    before = keyfile(config).read_bytes()
    with key_file_lock(keys_dir(config)):
        with pytest.raises(UserError, match="another `civicmail keys` command"):
            rotate(registry)
    assert keyfile(config).read_bytes() == before
    assert all(version_of(b) == 1 for b in citizen_ciphers(store).values())


def version_table(out: str) -> dict[str, list[str]]:
    """`keys status`'s table: version -> [citizen ID numbers, sealed drop rows]."""
    rows = [line.split() for line in out.splitlines()]
    return {r[0]: r[1:3] for r in rows if len(r) >= 3 and all(x.isdigit() for x in r[:3])}


def test_cli_status_rotate_retire(config, registry, store):
    """A real `civicmail` process: exit codes, counts, and never an ID number in its output."""
    populate(registry, store)
    old_ring = registry.keyring
    c = ["-c", str(config.data_dir / "civicmail.toml"), "--set", f'store.url="{config.store_url}"']
    outputs = []

    def run(*args):
        done = civicmail(*c, "keys", *args)
        outputs.append(done.stdout + done.stderr)
        assert "Traceback" not in done.stderr
        return done

    status = run("status")
    assert status.returncode == 0, status.stderr
    assert "current   version 1" in status.stdout
    assert version_table(status.stdout) == {"1": ["7", "2"]}

    rotated = run("rotate", "--batch-size", "2")
    assert rotated.returncode == 0, rotated.stderr
    assert "key version 2 added" in rotated.stdout
    assert "re-encrypted 7 citizen ID numbers: 7 from version 1" in rotated.stdout
    assert "re-encrypted 2 sealed drop rows: 2 from version 1" in rotated.stdout
    assert "restart every running civicmail server" in rotated.stdout
    assert all(version_of(b) == 2 for b in citizen_ciphers(store).values())

    cid = min(citizen_ciphers(store))
    set_cipher(store, cid, old_ring.encrypt(NUMBERS[0]))
    before = keyfile(config).read_bytes()
    refused = run("retire")
    assert refused.returncode == 1 and "1 on version 1" in refused.stderr
    assert keyfile(config).read_bytes() == before

    status = run("status")
    assert version_table(status.stdout) == {"1": ["1", "0"], "2": ["6", "2"]}
    assert "rows on older versions: 1;" in status.stdout

    resumed = run("rotate")
    assert resumed.returncode == 0 and "no key added" in resumed.stdout
    assert "re-encrypted 1 citizen ID numbers: 1 from version 1" in resumed.stdout
    retired = run("retire")
    assert retired.returncode == 0 and "retired key version(s) 1" in retired.stdout
    assert sorted(IdKeyring.load(keys_dir(config)).enc_keys) == [2]

    bad = run("rotate", "--batch-size", "0")
    assert bad.returncode == 2
    helped = run("rotate", "--help")
    assert "MAC key" in helped.stdout and "activation" in helped.stdout
    for text in outputs:
        assert_no_id_number(text)
