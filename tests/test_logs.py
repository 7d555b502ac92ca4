"""The log formatter of `civicmail serve`: one record per line whatever the fields carry."""
from __future__ import annotations

import io
import logging
from pathlib import Path

from mailserver.logs import OneLineFormatter, printable


def test_control_characters_are_escaped_and_text_is_kept():
    assert printable("a\rb\nc\td\x1b[31m\x7f\x85\u2028\u202e 张伟 \\") == \
        "a\\rb\\nc\\td\\x1b[31m\\x7f\\x85\\u2028\\u202e 张伟 \\"


def test_a_traceback_stays_below_its_record():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("civicmail.test.logs")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise ValueError("bad address\nINFO civicmail.smtp: forged\x1b[2J")
        except ValueError:
            log.exception("lookup of %s failed", "a\r\nINFO x: y")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    first, *rest = stream.getvalue().splitlines()
    assert first == "ERROR civicmail.test.logs: lookup of a\\r\\nINFO x: y failed"
    assert rest and all(line.startswith("  ") for line in rest)
    assert "  INFO civicmail.smtp: forged\\x1b[2J" in rest


def test_every_command_logs_through_the_escaping_formatter(tmp_path):
    """Not only `serve`: a warning any command logs is one escaped line (here `civicmail` itself,
    whose root group sets up logging, with a command that logs a file name holding ESC and CR)."""
    import subprocess
    import sys

    script = ("import logging, sys\n"
              "from mailserver.cli import cli\n"
              "@cli.command('shout')\n"
              "def shout():\n"
              "    logging.getLogger('civicmail.test').warning('bad file %s', 'a\\x1b[31mb\\rFAKE LINE')\n"
              "from mailserver.cli import main\n"
              "sys.exit(main(['shout']))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=tmp_path, timeout=60,
                          env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert done.returncode == 0, done.stderr
    assert done.stderr == b"bad file a\\x1b[31mb\\rFAKE LINE\n"


def test_an_id_number_is_hidden_in_the_message_and_in_a_traceback():
    record = logging.LogRecord("civicmail.delivery", logging.ERROR, __file__, 1, "refused to=<%s@x>",
                               ("330102196804120318",), None)
    try:
        int("3301 0219 6804 1203 18")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    text = OneLineFormatter("%(message)s").format(record)
    assert "1968" not in text and "to=<[隐去的长号码 / long number hidden]@x>" in text, text
    assert "ValueError: invalid literal for int() with base 10: '[隐去的长号码 / long number hidden]'" in text
