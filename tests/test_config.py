"""Configuration: found, overridden, frozen; bad values name their key."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mailserver import config as config_mod
from mailserver.config import REPO_ROOT
from mailserver.errors import ConfigError


def test_shipped_config_is_the_defaults():
    """config/civicmail.toml documents every key with its default value."""
    shipped = config_mod.load(REPO_ROOT / "config" / "civicmail.toml")
    defaults = config_mod.build({})
    for f in dataclasses.fields(defaults):
        if f.name != "source":
            assert getattr(shipped, f.name) == getattr(defaults, f.name), f.name


def test_every_key_is_documented_in_the_shipped_file():
    text = (REPO_ROOT / "config" / "civicmail.toml").read_text()
    for section in dataclasses.fields(config_mod.Config):
        if section.name == "source":
            continue
        assert f"[{section.name}]" in text
        for key in dataclasses.fields(section.default_factory()):
            assert f"\n{key.name} = " in text, f"{section.name}.{key.name} missing"


def test_overrides_apply_and_config_is_frozen(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[imap]\nlisten = "0.0.0.0:993"\n')
    cfg = config_mod.load(path, ("imap.listen=127.0.0.1:1143", "smtp.max_recipients=5", "server.development=false",
                                 'city.extra_domains=["a.example.cn"]'))
    assert cfg.imap.listen == "127.0.0.1:1143"
    assert cfg.smtp.max_recipients == 5
    assert cfg.server.development is False
    assert cfg.local_domains == ("civic.example", "a.example.cn")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.imap.listen = "x"  # type: ignore[misc]


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    path = tmp_path / "sub" / "civicmail.toml"
    path.parent.mkdir()
    path.write_text('[server]\ndata_dir = "data"\n')
    cfg = config_mod.load(path)
    assert cfg.data_dir == (tmp_path / "sub" / "data").resolve()
    assert cfg.store_url == f"sqlite:///{tmp_path / 'sub' / 'data' / 'civicmail.sqlite3'}"


@pytest.mark.parametrize("text, override, message", [
    ('[imap]\nlisten = "nohost"\n', None, "imap.listen"),
    ('[imap]\nlisten = 143\n', None, "imap.listen: expected a string"),
    ('[smtp]\nmax_message_size = "big"\n', None, "smtp.max_message_size: expected a whole number"),
    ('[smtp]\nlisen = "x"\n', None, "smtp.lisen: unknown key"),
    ('[smpt]\nlisten = "x"\n', None, "smpt: unknown section"),
    ('[city]\ndomain = "nodot"\n', None, "city.domain"),
    ('', "imap.listen", "expected section.key=value"),
    ('', "server.development=maybe", "server.development: expected true or false"),
    ('[server\n', None, "not valid TOML"),
    ('[smtp]\ntrusted_networks = ["10.0.0.0/8", "office"]\n', None, "smtp.trusted_networks: 'office' is not a network"),
    ('', "server.max_connections=-1", "server.max_connections: must be 0"),
    ('', "imap.preauth_timeout=0", "imap.preauth_timeout: must be at least 1"),
    ('', "imap.max_preauth_command_size=100", "imap.max_preauth_command_size: must be at least 1024"),
    ('', "server.worker_respawn_delay=0", r"server.worker_respawn_delay, server.worker_respawn_max: must be 0.1 <= "
                                          r"delay <= max <= 3600 seconds \(got 0 and 60\)"),
    ('[server]\nworker_respawn_delay = 90.0\n', None, r"must be 0.1 <= delay <= max .*\(got 90 and 60\)"),
    ('', "server.worker_respawn_max=7200", r"must be 0.1 <= delay <= max <= 3600 seconds \(got 1 and 7200\)"),
    ('', "server.worker_respawn_steady=-1", "server.worker_respawn_steady: must be more than 0"),
    ('', "server.worker_respawn_steady=nan", "server.worker_respawn_steady: must be more than 0"),
    ('', "imap.handoff_ask_timeout=0", "imap.handoff_ask_timeout: must be 0.1 to 60 seconds"),
    ('', 'imap.handoff_ask_timeout="5s"', "imap.handoff_ask_timeout: expected a number"),
    ('', "store.keep_result_rows=0", r"store.keep_result_rows: must be 1 to 1000000 rows \(got 0\)"),
    ('', "store.keep_result_rows=2000000", "store.keep_result_rows: must be 1 to 1000000"),
    ('', "delivery.writer_wal_pages=100", "delivery.writer_wal_pages: must be at least 1000"),
])
def test_bad_config_names_the_key(tmp_path, text, override, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        config_mod.load(path, (override,) if override else ())


def test_config_is_found_by_flag_then_environment_then_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CIVICMAIL_CONFIG", raising=False)
    assert config_mod.find_config_path(None) is None
    (tmp_path / "civicmail.toml").write_text("")
    assert config_mod.find_config_path(None) == Path("civicmail.toml")
    monkeypatch.setenv("CIVICMAIL_CONFIG", "/etc/x.toml")
    assert config_mod.find_config_path(None) == Path("/etc/x.toml")
    assert config_mod.find_config_path("given.toml") == Path("given.toml")


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        config_mod.load(tmp_path / "absent.toml")
