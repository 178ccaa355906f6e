"""The house rules scripts/check/house.py checks hold on this tree, and it can tell a breach."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "scripts" / "check" / "house.py"


def test_the_house_rules_hold():
    proc = subprocess.run([sys.executable, str(CHECK)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout


def test_the_check_catches_a_mode_switch_and_a_circle(tmp_path):
    """A copy of the tree with a branch over a mode name in peer/ and an import circle."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for pkg in ("protocol", "peer", "coordinator", "scripts"):
        shutil.copytree(ROOT / pkg, tree / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    with open(tree / "peer" / "participant.py", "a") as f:
        f.write('\n\ndef _switch(announce):\n    return 1 if announce.mode == "vss" else 0\n')
    with open(tree / "peer" / "follower.py", "a") as f:
        f.write("\nfrom peer import daemon  # noqa\n")
    proc = subprocess.run([sys.executable, str(tree / "scripts" / "check" / "house.py")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "peer.daemon -> peer.follower" in proc.stdout
    assert "participant.py" in proc.stdout and "branches on a round mode" in proc.stdout
