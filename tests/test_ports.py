"""Two bundles in different directories with the same PORT: `start` refuses before it starts
anything, naming the port and the other bundle's directory (found through /proc)."""

import subprocess
import sys

from conftest import ROOT, bk_env, free_port, py_command, wait_for


def listener(port, other_home):
    """A real process of 'another bundle' holding the port, as its web component would."""
    proc = subprocess.Popen(py_command(f"""
        import socket, sys, time
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", {port}))
        s.listen()
        print("listening", flush=True)
        time.sleep(120)
    """), env={"BOTKEEPER_HOME": str(other_home), "PATH": "/usr/bin:/bin"}, cwd=other_home,
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "listening"
    return proc


def test_start_refuses_a_port_held_by_another_bundle_and_names_it(home, tmp_path):
    other = tmp_path / "other-bundle"
    other.mkdir()
    port = free_port()
    holder = listener(port, other)
    try:
        done = subprocess.run([sys.executable, "-m", "botkeeper", "start", "--detach"], cwd=ROOT,
                              env=bk_env(home, PORT=str(port)), capture_output=True, text=True, timeout=60)
        assert done.returncode == 78, done
        assert "Traceback" not in done.stderr
        line = done.stderr.strip()
        assert len(line.splitlines()) == 1
        assert f"port {port} (status page, PORT) is already in use by pid {holder.pid}" in line
        assert str(other) in line and "set PORT to a free port" in line
        assert not (home / "run" / "runner.pid").exists() and not (home / "run" / "supervisor.pid").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_free_port_is_not_refused(home):
    from botkeeper.supervise import ports

    port = free_port()
    assert ports.refusal("0.0.0.0", port, "PORT", "status page") is None
