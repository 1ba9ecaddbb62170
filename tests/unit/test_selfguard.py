"""selfguard: a bridge process hides its secrets from /proc, with real processes reading real /proc files.

Each case runs a fresh Python process (the guards change the process they run in, for good) and has it, or a
child it starts, read what another process of the same user would see.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import require

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="/proc/<pid>/environ and PR_SET_DUMPABLE are Linux's")

BLANK = """
import json, os, subprocess
from mcp_bridge import selfguard
blanked = selfguard.blank_secret_environ()
inherited = subprocess.run(["env"], capture_output=True, text=True).stdout  # env=None: the C environ as it is now
print(json.dumps({"blanked": blanked, "kept": [os.environ["COMPASS_BRIDGE_KEY"], os.environ["MY_TOKEN"]],
                  "proc": open("/proc/self/environ", "rb").read().decode(), "inherited": inherited}))
"""


def test_secret_values_are_blanked_in_proc_and_kept_in_the_process() -> None:
    env = {"PATH": os.environ["PATH"], "COMPASS_BRIDGE_KEY": "cb_selfguard_probe", "MY_TOKEN": "tok_selfguard",
           "PLAIN": "still-visible"}
    done = subprocess.run([sys.executable, "-c", BLANK], env=env, capture_output=True, text=True, check=True)
    seen = json.loads(done.stdout)
    assert seen["blanked"] == 2 and seen["kept"] == ["cb_selfguard_probe", "tok_selfguard"]
    for shown in (seen["proc"], seen["inherited"]):
        assert "cb_selfguard_probe" not in shown and "tok_selfguard" not in shown
        assert "PLAIN=still-visible" in shown and "COMPASS_BRIDGE_KEY=" in shown


# A child reads its parent's /proc files as any process of the same user could (the parent sets a marker).
READ_PARENT = """
import os, subprocess, sys
from mcp_bridge import selfguard
if sys.argv[1] == "undumpable":
    assert selfguard.make_undumpable()
for name in ("environ", "maps"):
    read = subprocess.run(["cat", f"/proc/{os.getpid()}/{name}"], capture_output=True, env={"PATH": os.environ["PATH"]})
    print(name, read.returncode, int(b"SELFGUARD_MARK" in read.stdout or b"python" in read.stdout))
"""


@pytest.mark.parametrize("mode", ["dumpable", "undumpable"])
def test_an_undumpable_process_hides_its_proc_files_from_the_same_user(mode: str) -> None:
    as_user: list[str] = []
    # Root reads everything: as root, drop to an ordinary user for both the parent and its child.
    if sys.platform != "win32" and os.geteuid() == 0:
        require(shutil.which("setpriv") is not None, "setpriv(1)", "install util-linux")
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {"PATH": os.environ["PATH"], "SELFGUARD_MARK": "1"}
    done = subprocess.run([*as_user, sys.executable, "-c", READ_PARENT, mode], env=env, cwd="/",
                          capture_output=True, text=True, check=True)
    lines = done.stdout.split("\n")
    if mode == "dumpable":  # the control: without the guard, the same reads succeed
        assert lines[:2] == ["environ 0 1", "maps 0 1"], done.stdout
    else:
        assert [line.split()[0] for line in lines[:2]] == ["environ", "maps"], done.stdout
        assert all(line.split()[1] != "0" and line.split()[2] == "0" for line in lines[:2]), done.stdout
