""".ci/run, the README's test command, run for real on a small project laid out like ours (issue 16
item 12): a line per step, logs under the checkout, a parallel group and a serial group.

Only what would change the machine is stood in for: `pip` (the virtual environment is a wrapper of this
interpreter, whose pytest and pytest-xdist run the groups) and `dpkg` (every Debian client installed,
so no apt-get runs).
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mailserver.config import REPO_ROOT

pytest.importorskip("xdist", reason="pytest-xdist is not installed (the test extras of setup.cfg have it)")

PYTEST_CONFIG = """[tool:pytest]
markers =
    serial: runs alone
"""

# Each test writes down the xdist worker it ran in ("none": in pytest's own process).
RECORD = ("import os\nfrom pathlib import Path\n\nimport pytest\n\n\n"
          "def record(name):\n"
          "    Path(__file__).with_name(name + '.worker').write_text(os.environ.get('PYTEST_XDIST_WORKER', 'none'))\n")
TESTS = {
    "test_one.py": RECORD + "\n\ndef test_one():\n    record('one')\n",
    "test_two.py": RECORD + "\n\ndef test_two():\n    record('two')\n",
    "test_deadline.py": RECORD + "\n\n@pytest.mark.serial\ndef test_alone():\n    record('alone')\n",
}


def _script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def checkout(tmp_path) -> Path:
    root = tmp_path / "checkout"
    (root / ".ci").mkdir(parents=True)
    shutil.copy(REPO_ROOT / ".ci" / "run", root / ".ci" / "run")
    (root / "setup.cfg").write_text(PYTEST_CONFIG)
    for name, text in TESTS.items():
        (root / "tests").mkdir(exist_ok=True)
        (root / "tests" / name).write_text(text)
    _script(root / ".venv-ci" / "bin" / "python", f'exec "{sys.executable}" "$@"\n')
    _script(root / ".venv-ci" / "bin" / "pip", 'echo "pip $*"\n')
    _script(tmp_path / "bin" / "dpkg", "exit 0\n")
    _script(tmp_path / "bin" / "npm", 'echo "npm $*"\n')  # what it would install, not the registry
    return root


def ci_run(checkout: Path, *args: str) -> subprocess.CompletedProcess:
    # not this run's own pytest variables (an xdist worker's PYTEST_XDIST_WORKER, PYTEST_ADDOPTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "CIVICMAIL_VENV"}
    env.update(PATH=f"{checkout.parent / 'bin'}{os.pathsep}{os.environ['PATH']}", CIVICMAIL_TEST_WORKERS="2")
    return subprocess.run(["bash", str(checkout / ".ci" / "run"), *args], cwd=checkout.parent, env=env,
                          capture_output=True, text=True, timeout=300)


def test_each_step_says_where_it_is_and_logs_under_the_checkout(checkout):
    done = ci_run(checkout, "-rA")
    assert done.returncode == 0, done.stdout + done.stderr
    starts = [s for s in re.findall(r"^==> (\w+): (.*?)(?: \[\d\d:\d\d:\d\d\])?$", done.stdout, re.M)
              if s[0] != "postgresql"]  # said only where pg_isready is installed
    assert [step for step, _ in starts] == ["apt", "pip", "npm", "tests", "tests", "done"], done.stdout
    assert starts[3][1].startswith("group parallel") and starts[4][1].startswith("group serial")
    assert re.findall(r"^<== (\w+): ok \(\d+ s\)$", done.stdout, re.M) == ["pip", "npm", "tests", "tests"]

    logs = checkout / ".ci" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["npm.log", "pip.log", "tests-parallel.log",
                                                      "tests-serial.log"]
    assert "pip install --disable-pip-version-check -e .[test]" in (logs / "pip.log").read_text()
    # axe-core for the portal's accessibility test, pinned, into the checkout's .ci/node
    assert re.search(r"npm install --prefix \.ci/node .*axe-core@\d+\.\d+\.\d+$", (logs / "npm.log").read_text(),
                     re.M)
    parallel, serial = (logs / "tests-parallel.log").read_text(), (logs / "tests-serial.log").read_text()
    assert "PASSED tests/test_one.py::test_one" in parallel and "PASSED tests/test_two.py::test_two" in parallel
    assert "test_alone" not in parallel
    assert "PASSED tests/test_deadline.py::test_alone" in serial and "test_one" not in serial
    # the serial test ran in pytest's own process, the others in xdist workers
    workers = {p.stem: p.read_text() for p in (checkout / "tests").glob("*.worker")}
    assert workers["alone"] == "none" and {workers["one"], workers["two"]} <= {"gw0", "gw1"}, workers


def test_a_failing_test_fails_the_run_and_names_its_log(checkout):
    (checkout / "tests" / "test_two.py").write_text("def test_two():\n    assert False\n")
    done = ci_run(checkout, "tests/test_two.py")  # arguments go to both groups: the serial one has none
    assert done.returncode == 1
    assert "<== tests: failed (exit 1; see .ci/logs/tests-parallel.log)" in done.stdout
    assert "(no tests in this group)\n<== tests: ok" in done.stdout  # the serial group still ran, empty
    assert "==> done: FAILED" in done.stdout
