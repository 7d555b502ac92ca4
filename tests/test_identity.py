"""ID numbers, the keys that protect them, passwords, addresses."""
from __future__ import annotations

import datetime as dt

import pytest

from mailserver.config import PasswordConfig
from mailserver.errors import ValidationError
from mailserver.identity import addresses, idnumber
from mailserver.identity.keys import IdKeyring
from mailserver.identity.passwords import Passwords, activation_code, normalize_code

# Published example numbers with known check characters (GB 11643 weights, mod 11).
VALID = ("11010519491231002X", "440524188001010014", "110101199003074477")


@pytest.mark.parametrize("number", VALID)
def test_valid_numbers_pass(number):
    assert idnumber.normalize(number) == number


def test_lower_case_x_is_accepted_and_normalised():
    assert idnumber.normalize("11010519491231002x") == "11010519491231002X"
    assert idnumber.normalize(" 11010519491231002x ") == "11010519491231002X"


@pytest.mark.parametrize("number, reason", [
    ("110105194912310021", "checksum"),
    ("11010519491231002", "18 characters"),
    ("1101051949123100211", "18 characters"),
    ("", "18 characters"),
    ("11010519491231002Y", "last character"),
    ("1101051949123A002X", "first 17"),
    ("110105194913310025", "birth date"),
])
def test_invalid_numbers_are_refused_with_a_reason(number, reason):
    with pytest.raises(ValidationError, match=reason) as info:
        idnumber.normalize(number)
    if len(number) >= 6:
        assert number not in str(info.value)  # the number never goes into messages or logs


def test_every_single_digit_typo_is_caught():
    number = VALID[1]
    for i in range(17):
        for d in "0123456789":
            if d != number[i]:
                typo = number[:i] + d + number[i + 1:]
                assert not idnumber.is_valid(typo)


def test_make_builds_valid_numbers():
    n = idnumber.make("330106", dt.date(1990, 5, 17), 42)
    assert idnumber.is_valid(n) and n.startswith("33010619900517042")


def test_mask_hides_the_middle():
    assert idnumber.mask("11010519491231002X") == "110*************2X"


def test_keyring_round_trip_and_index(tmp_path):
    ring = IdKeyring.generate()
    ring.save(tmp_path)
    loaded = IdKeyring.load(tmp_path)
    blob = loaded.encrypt(VALID[0])
    assert VALID[0].encode() not in blob
    assert ring.decrypt(blob) == VALID[0]
    assert loaded.index(VALID[0]) == ring.index(VALID[0]) != ring.index(VALID[1])
    assert ring.encrypt(VALID[0]) != blob  # a fresh nonce every time
    assert (tmp_path / "idnumber.json").stat().st_mode & 0o077 == 0


def test_rotated_keyring_reads_old_ciphertexts():
    ring = IdKeyring.generate()
    old = ring.encrypt(VALID[0])
    new_ring = ring.rotated()
    assert new_ring.current == 2
    assert new_ring.decrypt(old) == VALID[0]
    assert new_ring.decrypt(new_ring.encrypt(VALID[1])) == VALID[1]
    assert new_ring.encrypt(VALID[1])[:2] == b"\x00\x02"


def test_tampered_ciphertext_is_refused():
    from cryptography.exceptions import InvalidTag

    ring = IdKeyring.generate()
    blob = bytearray(ring.encrypt(VALID[0]))
    blob[-1] ^= 1
    with pytest.raises(InvalidTag):
        ring.decrypt(bytes(blob))


def test_passwords_hash_with_argon2id_and_verify():
    pw = Passwords(PasswordConfig())
    hashed = pw.hash("correct horse battery")
    assert hashed.startswith("$argon2id$") and "m=19456" in hashed
    assert "correct horse" not in hashed
    assert pw.verify(hashed, "correct horse battery")
    assert not pw.verify(hashed, "correct horse battery!")
    assert not pw.verify(None, "correct horse battery")
    assert not pw.verify("not a hash", "x")
    assert pw.hash("correct horse battery") != hashed  # salted


def test_short_passwords_are_refused():
    with pytest.raises(ValidationError, match="at least 8"):
        Passwords(PasswordConfig()).hash("short")


def test_activation_codes_are_readable_and_normalise():
    code = activation_code()
    assert len(code) == 19 and code.count("-") == 3
    assert not set(normalize_code(code)) & set("01OIL")
    assert normalize_code(code.lower().replace("-", " ")) == normalize_code(code)


@pytest.mark.parametrize("name, local", [
    ("张伟", "zhang.wei"),
    ("欧阳娜娜", "ouyang.nana"),
    ("吕布", "lv.bu"),
    ("Zoë Åström", "zoe.astrom"),
    ("阿卜杜·热合曼", "a.bodureheman"),
])
def test_default_address_from_name(name, local):
    assert addresses.base_local_part(name) == local


def test_numbered_addresses():
    assert [addresses.numbered("zhang.wei", n) for n in (1, 2, 3)] == ["zhang.wei", "zhang.wei2", "zhang.wei3"]


@pytest.mark.parametrize("bad", ["zhang wei", "-x", "a..b", "x@nodot", "张伟"])
def test_bad_addresses_are_refused(bad):
    with pytest.raises(ValidationError):
        addresses.normalize_address(bad, "hz.example.cn")


@pytest.mark.parametrize("spelled", ["civic.example", "CIVIC.Example", "civic.example.", " civic.example. ",
                                     "ｃｉｖｉｃ.example", "civic。example", "civic.example\u200b"])
def test_one_form_of_a_domain(spelled):
    assert addresses.normalise_domain(spelled) == "civic.example"


def test_domains_in_other_scripts_compare_in_ascii():
    assert addresses.normalise_domain("市政.Example.") == "xn--7st04n.example"
    assert addresses.normalise_domain("xn--7st04n.example") == "xn--7st04n.example"
    assert addresses.normalise_domain("civic..example") == "civic..example"  # not a name: only lower-cased


@pytest.mark.parametrize("spelled", ["wang.fang@civic.example", " Wang.Fang@Civic.Example.", "wang.fang@civic.example\t",
                                     "\u3000WANG.FANG@civic.example"])
def test_one_form_of_a_login(spelled):
    assert addresses.normalise_login(spelled) == "wang.fang@civic.example"
    assert addresses.normalise_login(" Traffic-Police ") == "traffic-police"


def test_login_throttle_counts_attempts_in_flight_and_forgets_a_window():
    from mailserver.config import LoginConfig
    from mailserver.identity.throttle import LoginThrottle

    now = [0.0]
    throttle = LoginThrottle(LoginConfig(max_failures_per_ip=3, max_failures_per_account=2, window_seconds=60),
                             clock=lambda: now[0])
    assert throttle.reserve("192.0.2.1", "a@x.cn") and throttle.reserve("192.0.2.1", " A@X.CN.")
    assert not throttle.reserve("192.0.2.1", "a@x.cn")  # two in flight fill the account's limit
    throttle.succeeded("192.0.2.1", "a@x.cn")  # a right password releases its slot
    assert throttle.reserve("192.0.2.1", "a@x.cn")
    throttle.failed("192.0.2.1", "a@x.cn")
    throttle.failed("192.0.2.1", "a@x.cn")
    assert not throttle.reserve("192.0.2.1", "a@x.cn")
    assert throttle.reserve("192.0.2.1", "b@x.cn")  # the IP: 2 failures + 1 in flight of 3
    assert not throttle.reserve("192.0.2.1", "c@x.cn")
    throttle.released("192.0.2.1", "b@x.cn")  # the check could not be made: counts for nothing
    assert throttle.reserve("192.0.2.2", "c@x.cn")
    now[0] = 61.0
    assert throttle.reserve("192.0.2.1", "a@x.cn")  # the window has passed


def test_login_throttle_makes_attempts_past_the_ones_in_flight_wait_not_fail():
    """Ten connections of one mail client logging in at once with the right password are all
    let in, a few at a time; wrong ones at once are still checked no more than the limit."""
    import asyncio

    from mailserver.config import LoginConfig
    from mailserver.identity.throttle import LoginThrottle

    async def attempts(right: bool) -> tuple[int, int]:
        throttle = LoginThrottle(LoginConfig(max_failures_per_ip=100, max_failures_per_account=3, window_seconds=60))
        checked = 0
        most_at_once = in_flight = 0

        async def one() -> None:
            nonlocal checked, most_at_once, in_flight
            if not await throttle.acquire("192.0.2.1", "a@x.cn"):
                return
            checked += 1
            in_flight += 1
            most_at_once = max(most_at_once, in_flight)
            await asyncio.sleep(0.01)  # the password check
            in_flight -= 1
            (throttle.succeeded if right else throttle.failed)("192.0.2.1", "a@x.cn")

        await asyncio.gather(*(one() for _ in range(10)))
        return checked, most_at_once

    assert asyncio.run(attempts(right=True)) == (10, 3)
    assert asyncio.run(attempts(right=False)) == (3, 3)
