"""Disks and files: a directory of the bundle that is a file, read-only or out of inodes gives one
line naming it and exit 78 (73 when the disk is full), never a traceback, from every entry point."""

import subprocess
import sys

import pytest

from conftest import ROOT, bk_env
from mounts import tmpfs


def run(home, *argv, timeout=30):
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=bk_env(home), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("argv, blocked", [
    (["-m", "botkeeper", "start", "--detach"], "logs"),
    (["-m", "botkeeper", "start", "--detach"], "run"),
    (["-m", "botkeeper", "supervise"], "data"),
    (["-m", "botkeeper", "stop"], "run"),
    (["bot_monitor.py"], "data"),
    (["auto_recovery.py"], "logs"),
])
def test_a_directory_that_is_a_file_is_one_line_and_exit_78(home, argv, blocked):
    (home / blocked).write_text("not a directory\n")
    done = run(home, *argv)
    assert done.returncode == 78, done
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(home / blocked) in lines[0] and "move or delete" in lines[0], lines
    assert not (home / "run" / "supervisor.pid").exists()  # nothing was started


def test_a_read_only_logs_directory_is_named_and_nothing_starts(home):
    with tmpfs(home / "logs", "size=1m,ro"):
        done = run(home, "-m", "botkeeper", "start", "--detach")
    assert done.returncode == 78, done
    assert "Traceback" not in done.stderr
    assert f"{home / 'logs'} is not writable (Read-only file system)" in done.stderr
    assert not (home / "run" / "runner.pid").exists()


def test_a_data_directory_out_of_inodes_exits_73(home):
    with tmpfs(home / "data", "size=1m,nr_inodes=4") as data:
        n = 0
        try:
            while True:
                (data / f"f{n}").write_text("")
                n += 1
        except OSError:
            pass
        done = run(home, "-m", "botkeeper", "supervise")
    assert done.returncode == 73, done
    assert "Traceback" not in done.stderr
    assert f"{home / 'data'} is not writable: the disk is full" in done.stderr
