"""The tests' way to ports (tests/serverkit.py): a server started on a port that another process
took between its choice and the bind is started again on another (``on_free_ports``), and
nothing of the failed start is left running; any other failure is not retried; a port bound to 0
is read back from `serve`'s log (``listening_port``)."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

from tests.abuse import city_factory  # noqa: F401  (fixture)
from tests.serverkit import listening_port, on_free_ports, start_program


def _thief(port: int) -> socket.socket:
    """Another process's listener on ``port``, taken after the port was chosen."""
    thief = socket.socket()
    thief.bind(("127.0.0.1", port))
    thief.listen()
    return thief


def test_a_program_whose_port_was_taken_is_started_again_on_another(tmp_path):
    thieves: list[socket.socket] = []
    tried: list[int] = []

    def start(port: int) -> tuple[subprocess.Popen, int]:
        tried.append(port)
        if not thieves:
            thieves.append(_thief(port))
        return start_program([sys.executable, "-u", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                             tmp_path / f"http-{port}.log", f"port {port} (", cwd=tmp_path), port

    proc, port = on_free_ports(start)
    try:
        assert len(tried) == 2 and port == tried[1] != tried[0], tried
        assert "Address already in use" in (tmp_path / f"http-{tried[0]}.log").read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as answer:
            assert answer.status == 200
    finally:
        proc.terminate()
        proc.wait(10)
        thieves[0].close()


def test_a_city_whose_port_was_taken_starts_again_on_another(city_factory):  # noqa: F811
    """The port of the provider's URL (http.listen) is known before the city starts: taken
    meanwhile, serve's StartupError; the services that had started stop, and the city starts
    again on a new port."""
    thieves: list[socket.socket] = []
    tried: list[int] = []

    def start(port: int):
        tried.append(port)
        if not thieves:
            thieves.append(_thief(port))
        return city_factory(f"http.listen=127.0.0.1:{port}")

    try:
        town = on_free_ports(start)
    finally:
        for thief in thieves:
            thief.close()
    assert len(tried) == 2 and town.port("citizen services HTTP") == tried[1], tried
    loops = [t for t in threading.enumerate() if "run_forever" in t.name]
    assert len(loops) == 1, loops  # the failed start's loop stopped with its services


def test_another_failure_is_not_retried():
    tried: list[int] = []

    def start(port: int) -> None:
        tried.append(port)
        raise AssertionError("the program refused its configuration")

    with pytest.raises(AssertionError, match="refused its configuration"):
        on_free_ports(start)
    assert len(tried) == 1


def test_a_listeners_port_is_read_from_serves_log():
    log = ["INFO civicmail.imap: imaps listening on 127.0.0.1:5993\n",
           "INFO civicmail.imap: imap listening on 127.0.0.1:5143\n",
           "INFO civicmail.smtp: SMTP submission listening on 127.0.0.1:5587 (STARTTLS)\n"]
    assert listening_port(log, "imap") == 5143 and listening_port(log, "imaps") == 5993
    assert listening_port(log, "SMTP submission") == 5587
    with pytest.raises(AssertionError, match="no 'SMTP smtp listening on'"):
        listening_port(log, "SMTP smtp")
