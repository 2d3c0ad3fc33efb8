"""Stopping fast and living inside outer supervisors (issue 11), with real processes: the foreground
start and its signals, PID 1 in a fresh PID namespace, sd_notify over a real datagram socket, the
liveness endpoint, the generated systemd unit, cron lines, and the deploy files' linters."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import requests

from conftest import ROOT, SLEEPER, bk_env, free_port, read_state, wait_for, write_components
from test_bundle import FAKE_BOT, bundle_processes

from botkeeper.supervise import outer, sdnotify

TEST_KILL_TIMEOUT = 3.0  # KILL_TIMEOUT of the test profile
BOUND = TEST_KILL_TIMEOUT + 2  # the bound: slowest kill timeout + 2 s


def botkeeper(home, *args, env=None, timeout=60, **extra):
    return subprocess.run([sys.executable, "-m", "botkeeper", *args], cwd=ROOT, env=env or bk_env(home, **extra),
                          capture_output=True, text=True, timeout=timeout)


class Foreground:
    """`python -m botkeeper start` (optionally wrapped), its output collected; killed at teardown."""

    def __init__(self, cmd, env):
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def saw(self, text):
        return any(text in line for line in self.lines)

    def kill(self):
        if self.proc.poll() is None:
            try:  # a PID namespace's init first: with it goes everything inside
                for child in psutil.Process(self.proc.pid).children():
                    child.kill()
            except psutil.Error:
                pass
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def foreground():
    started = []

    def make(cmd, env):
        fg = Foreground(cmd, env)
        started.append(fg)
        return fg

    yield make
    for fg in started:
        fg.kill()


@pytest.fixture
def fake_home(home):
    write_components(home, bot={"command": FAKE_BOT}, web={"command": SLEEPER}, monitor={"command": SLEEPER})
    yield home
    botkeeper(home, "stop")
    wait_for(lambda: bundle_processes(home) == [], 10, message="nothing of the bundle left")


def healthy(env) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{env['PORT']}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


# --- detection and sd_notify, pure ----------------------------------------------------------------------
@pytest.mark.parametrize("facts, expected", [
    (outer.Facts({}), "none"),
    (outer.Facts({"INVOCATION_ID": "x", "NOTIFY_SOCKET": "/run/systemd/notify"}, ppid=1), "systemd"),
    (outer.Facts({"INVOCATION_ID": "x"}, ppid=1), "systemd"),
    (outer.Facts({"INVOCATION_ID": "x"}, ppid=4242), "none"),  # a desktop terminal's shell
    (outer.Facts({}, pid=1, ppid=0), "container"),
    (outer.Facts({}, pid=4300, ppid=4242, container_marker=True), "none"),  # a shell inside a container: nothing restarts us
    (outer.Facts({}, pid=40, ppid=1, container_marker=True), "container"),  # `sh -c` or tini as PID 1
    (outer.Facts({}, pid=40, ppid=1), "none"),  # re-parented on a bare machine
    (outer.Facts({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}), "container"),
    (outer.Facts({"pm_id": "0"}), "pm2"),
    (outer.Facts({"PM2_HOME": "/home/u/.pm2"}, container_marker=True), "pm2"),
    (outer.Facts({"REPL_ID": "r"}, pid=1, container_marker=True), "none"),
])
def test_detect(facts, expected):
    assert outer.detect(facts) == expected
    assert outer.resolve("none", facts) == "none" and outer.resolve("systemd", facts) == "systemd"
    assert outer.resolve("auto", facts) == expected


def test_outer_setting_is_checked(home):
    result = botkeeper(home, "config", BOTKEEPER_OUTER="docker")  # status works without settings (issue 25)
    assert result.returncode == 78
    assert "BOTKEEPER_OUTER='docker' is not valid: expected one of auto, none, systemd, container, pm2" in result.stderr


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    return sock, path


def test_notifier_ready_when_healthy_watchdog_at_half_interval(tmp_path):
    sock, path = notify_socket(tmp_path)
    clock = Clock()
    environ = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "4000000", "KEEP": "1"}
    n = sdnotify.Notifier.from_environ(environ, clock, start_timeout=30)
    assert environ == {"KEEP": "1"}  # children do not inherit systemd's variables
    verdicts = iter([(False, "starting: bot"), (True, "healthy")])
    n.tick(lambda: next(verdicts))
    assert sock.recv(1024) == b"WATCHDOG=1"  # not ready yet: no READY
    assert n.due() == 100.5  # the next readiness check
    clock.now = 100.5
    n.tick(lambda: next(verdicts))
    assert sock.recv(1024).startswith(b"READY=1\nSTATUS=healthy")
    assert n.due() == 102.0  # half of WATCHDOG_USEC after the first pet
    clock.now = 102.0
    n.tick(pytest.fail)  # READY is sent once: health is not asked again
    assert sock.recv(1024) == b"WATCHDOG=1"
    n.stopping("received SIGTERM")
    assert sock.recv(1024) == b"STOPPING=1\nSTATUS=received SIGTERM"


def test_notifier_sends_ready_after_start_timeout_even_when_unhealthy(tmp_path):
    sock, path = notify_socket(tmp_path)
    clock = Clock()
    n = sdnotify.Notifier.from_environ({"NOTIFY_SOCKET": str(path)}, clock, start_timeout=5)
    n.tick(lambda: (False, "needs-config: token rejected"))
    clock.now = 105.0
    n.tick(lambda: (False, "needs-config: token rejected"))
    assert sock.recv(1024).startswith(b"READY=1\nSTATUS=needs-config: token rejected")
    assert n.due() is None  # no watchdog asked for, READY sent: nothing left to do


def test_notifier_is_off_without_notify_socket():
    n = sdnotify.Notifier.from_environ({}, Clock(), start_timeout=5)
    assert not n.enabled and n.due() is None and n.send("READY=1") is False


# --- stopping -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_foreground_signal_stops_everything_within_the_bound(fake_home, foreground, sig):
    env = bk_env(fake_home, AUTO_RECOVERY="on")
    fg = foreground([sys.executable, "-m", "botkeeper", "start"], env)
    wait_for(lambda: fg.saw("botkeeper: healthy"), 30, message="healthy banner")
    wait_for(lambda: (fake_home / "run" / "recovery.pid").exists(), 10, message="auto_recovery up")
    assert len(bundle_processes(fake_home)) >= 5  # runner, supervisor, auto_recovery, three components
    fg.proc.send_signal(sig)
    assert fg.proc.wait(BOUND) == 0, "".join(fg.lines[-20:])
    assert bundle_processes(fake_home) == []
    assert not any("SIGKILL" in line for line in fg.lines), "a stop waited out a kill timeout"


def test_killed_foreground_start_takes_the_bundle_with_it(fake_home, foreground):
    env = bk_env(fake_home, AUTO_RECOVERY="on")
    fg = foreground([sys.executable, "-m", "botkeeper", "start"], env)
    wait_for(lambda: fg.saw("botkeeper: healthy"), 30, message="healthy banner")
    wait_for(lambda: (fake_home / "run" / "recovery.pid").exists(), 10, message="auto_recovery up")
    fg.proc.kill()  # a PaaS stop button escalating to SIGKILL
    fg.proc.wait(5)
    wait_for(lambda: bundle_processes(fake_home) == [], BOUND + 2, message="the bundle follows the killed start")
    assert (fake_home / "run" / "stopping").exists()  # nothing relaunched it meanwhile


def test_shell_inside_a_container_keeps_the_bundles_layers_and_heals_a_killed_supervisor(fake_home, foreground,
                                                                                          tmp_path):
    """A devcontainer's or `docker exec`'s shell: /.dockerenv (faked here) but nothing restarts what we start."""
    marker = tmp_path / ".dockerenv"
    marker.touch()
    env = bk_env(fake_home, AUTO_RECOVERY="on", BOTKEEPER_OUTER="auto", BOTKEEPER_CONTAINER_MARKERS=str(marker))
    assert outer.current_facts(env).container_marker
    fg = foreground([sys.executable, "-m", "botkeeper", "start"], env)
    wait_for(lambda: fg.saw("botkeeper: healthy"), 30, message="healthy banner")
    status = json.loads(botkeeper(fake_home, "status", "--json", env=env).stdout)
    assert status["outer"] == "none" and status["runner"]["running"], status
    first = status["supervisor"]["pid"]
    os.kill(first, signal.SIGKILL)
    healed = lambda: (s := read_state(fake_home).get("supervisor") or {}).get("pid") not in (None, first) and \
        botkeeper(fake_home, "status", env=env).returncode == 0  # noqa: E731
    wait_for(healed, 30, 0.2, message="a new supervisor (run_24_7.sh) and a healthy bundle")
    assert fg.proc.poll() is None  # the foreground start still streams


def test_detached_bundle_outlives_the_start_and_stop_is_fast(fake_home):
    env = bk_env(fake_home, AUTO_RECOVERY="on")
    assert botkeeper(fake_home, "start", "--detach", env=env).returncode == 0
    assert json.loads(botkeeper(fake_home, "status", "--json", env=env).stdout)["outer"] == "none"
    stop = subprocess.run(["bash", str(ROOT / "stop_24_7.sh")], env=env | {"BOTKEEPER_PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=BOUND + 5)
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert "SIGKILL" not in stop.stderr, stop.stderr
    assert bundle_processes(fake_home) == []


# --- PID 1 in a PID namespace (the container's entry command) ------------------------------------
def ns_pid(pid: int) -> int:
    """The pid a process has inside its own (innermost) PID namespace."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError("no NSpid line")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"),
                    reason="needs root and util-linux (unshare, nsenter)")
def test_pid1_in_a_pid_namespace_starts_reaps_and_stops_gracefully(home, foreground):
    env = bk_env(home, DEMO="on", EMULATOR_PORT=str(free_port()), BOTKEEPER_OUTER="auto", HOST="127.0.0.1")
    fg = foreground(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "botkeeper", "start"], env)
    pid1 = wait_for(lambda: psutil.Process(fg.proc.pid).children(), 10, message="PID 1 forked")[0]
    assert ns_pid(pid1.pid) == 1
    wait_for(lambda: healthy(env), 60, message="/health 200 from PID 1's bundle")
    assert botkeeper(home, "probe", env=env).returncode == 0
    assert botkeeper(home, "probe", "--live", env=env).returncode == 0
    inside = ["nsenter", "-t", str(pid1.pid), "-p", "-m", f"--wd={ROOT}", "--"]  # as `docker exec` runs a command
    status = subprocess.run(inside + [sys.executable, "-m", "botkeeper", "status", "--json"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    status = json.loads(status.stdout)
    assert status["outer"] == "container" and status["supervisor"]["pid"] == 1
    assert not status["runner"]["running"] and not status["auto_recovery"]["running"]
    assert "outer supervisor: container" in requests.get(f"http://127.0.0.1:{env['PORT']}/", timeout=5).text
    wait_for(lambda: fg.saw("botkeeper.bot: polling Telegram for updates"), 10, message="combined log on stdout (docker logs)")

    # An orphan inside the namespace: its parent exits at once, so PID 1 adopts it; it exits 1 s later.
    orphan_code = ("import os, sys, time\npid = os.fork()\nif pid == 0:\n    os.close(1)\n    os.close(2)\n    time.sleep(1.0)\n"
                   "    os._exit(0)\nprint(pid)")
    made = subprocess.run(inside + [sys.executable, "-c", orphan_code], capture_output=True, text=True, timeout=10,
                          check=True)
    inner = int(made.stdout)
    orphan = wait_for(lambda: next((p for p in pid1.children() if ns_pid(p.pid) == inner), None), 5,
                      message="the orphan adopted by PID 1")

    def reaped():
        try:
            return orphan.status() == psutil.STATUS_ZOMBIE and None
        except psutil.NoSuchProcess:
            return True

    wait_for(reaped, 5, message="the adopted orphan reaped by PID 1 (not left a zombie)")

    pid1.send_signal(signal.SIGTERM)  # what `docker stop` and Kubernetes do
    assert fg.proc.wait(10) == 0, "".join(fg.lines[-30:])
    assert "bot stopped" in (home / "logs" / "bot.log").read_text()  # python-telegram-bot's graceful stop
    assert bundle_processes(home) == []


# --- systemd mode: sd_notify from the real supervisor -----------------------------------------------------
def test_systemd_mode_runs_the_supervisor_alone_and_speaks_sd_notify(fake_home, foreground, tmp_path):
    sock, path = notify_socket(tmp_path)
    env = bk_env(fake_home, BOTKEEPER_OUTER="auto", INVOCATION_ID="0123abcd", NOTIFY_SOCKET=str(path),
                 WATCHDOG_USEC="400000", AUTO_RECOVERY="on")
    fg = foreground([sys.executable, "-m", "botkeeper", "start"], env)
    messages = []

    def got(prefix):
        while not any(m.startswith(prefix) for m in messages):
            messages.append(sock.recv(4096).decode())
        return True

    assert got("READY=1")
    assert any(m.startswith("READY=1\nSTATUS=healthy\n") for m in messages)  # sent once the verdict is healthy
    count = messages.count("WATCHDOG=1")
    wait_for(lambda: messages.append(sock.recv(4096).decode()) or messages.count("WATCHDOG=1") >= count + 2, 5,
             message="watchdog pets every 0.2 s (half of WATCHDOG_USEC)")
    sup = psutil.Process(fg.proc.pid)  # exec'd: systemd's main PID is the supervisor
    assert "supervise" in " ".join(sup.cmdline())
    assert not (fake_home / "run" / "runner.pid").exists() and not (fake_home / "run" / "recovery.pid").exists()
    bot_pid = next(c["pid"] for c in read_state(fake_home)["components"] if c["name"] == "bot")
    assert "NOTIFY_SOCKET" not in psutil.Process(bot_pid).environ()
    assert "outer supervisor: systemd" in botkeeper(fake_home, "status", env=env).stdout
    sup.send_signal(signal.SIGTERM)
    assert got("STOPPING=1")
    assert fg.proc.wait(BOUND) == 0
    assert bundle_processes(fake_home) == []


# --- liveness vs readiness ------------------------------------------------------------------------------------
def test_live_fails_only_when_the_supervisor_cannot_answer(home, supervised):
    sup = supervised(components={"bot": {"command": SLEEPER}, "monitor": {"enabled": False}},
                     HOST="127.0.0.1", HEARTBEAT_GRACE="0.5")
    base = f"http://127.0.0.1:{sup.env['PORT']}"

    def get(path):
        try:
            return requests.get(base + path, timeout=5).status_code
        except requests.RequestException:
            return None

    wait_for(lambda: get("/live") == 200, 30, message="/live 200")
    wait_for(lambda: get("/health") == 503, 10, message="/health 503: the bot never beats")
    assert get("/live") == 200  # an unhealthy bot is the supervisor's job, not a reason to kill the pod
    assert requests.head(base + "/live", timeout=5).status_code == 200
    os.kill(sup.proc.pid, signal.SIGSTOP)  # a hung supervisor: nothing inside can recover now
    try:
        wait_for(lambda: get("/live") == 503, 10, message="/live 503 while the supervisor is hung")
        assert botkeeper(home, "probe", "--live", env=sup.env).returncode == 1
    finally:
        os.kill(sup.proc.pid, signal.SIGCONT)
    wait_for(lambda: get("/live") == 200, 10, message="/live 200 again")


def test_probe_fails_when_nothing_listens(home):
    result = botkeeper(home, "probe", "--timeout", "2")
    assert result.returncode == 1 and "/health" in result.stderr


# --- systemd unit, cron, deploy files -------------------------------------------------------------------------
def test_generated_systemd_unit_passes_systemd_analyze_verify(home, tmp_path):
    result = botkeeper(home, "install", "systemd", "--unit-dir", str(tmp_path / "units"))
    assert result.returncode == 0, result.stderr
    assert "systemctl daemon-reload" in result.stdout and "systemctl enable --now botkeeper" in result.stdout
    unit = tmp_path / "units" / "botkeeper.service"
    text = unit.read_text()
    for line in ("Type=notify", "WatchdogSec=30", "Restart=always", "KillMode=mixed", "TimeoutStopSec=8", "RestartPreventExitStatus=78",
                 f"Environment=BOTKEEPER_HOME={home}", f"ExecStart={sys.executable} -m botkeeper start",
                 "WantedBy=multi-user.target", "User=root"):
        assert line + "\n" in text, line
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    user = botkeeper(home, "install", "systemd", "--user", "--unit-dir", str(tmp_path / "user"))
    user_text = (tmp_path / "user" / "botkeeper.service").read_text()
    assert user.returncode == 0 and "WantedBy=default.target" in user_text and "User=" not in user_text
    assert "systemctl --user enable --now botkeeper" in user.stdout
    assert botkeeper(home, "uninstall", "systemd", "--unit-dir", str(tmp_path / "units")).returncode == 0
    assert not unit.exists()
    foreign = tmp_path / "user" / "other.service"
    foreign.write_text("[Service]\nExecStart=/bin/true\n")
    refused = botkeeper(home, "uninstall", "systemd", "--name", "other", "--unit-dir", str(tmp_path / "user"))
    assert refused.returncode == 1 and "not written by" in refused.stderr and foreign.exists()


def test_cron_install_is_idempotent_and_uninstall_restores_the_crontab(home, tmp_path):
    crontab = tmp_path / "crontab"
    original = b"MAILTO=me@example.org\n# my own jobs\n0 3 * * * /usr/local/bin/backup --quiet\n"
    crontab.write_bytes(original)
    first = botkeeper(home, "install", "cron", CRONTAB_FILE=str(crontab))
    assert first.returncode == 0, first.stderr
    once = crontab.read_bytes()
    assert once.startswith(original)
    ours = once[len(original):].decode().splitlines()
    assert len(ours) == 2 and ours[0].startswith("@reboot ") and " start --detach " in ours[0]
    assert ours[1].startswith("*/5 * * * * ") and " ensure " in ours[1] and str(home) in ours[1]
    assert botkeeper(home, "install", "cron", CRONTAB_FILE=str(crontab)).returncode == 0
    assert crontab.read_bytes() == once  # idempotent
    other = tmp_path / "other"
    other.mkdir()
    assert botkeeper(other, "install", "cron", CRONTAB_FILE=str(crontab)).returncode == 0  # a second bundle
    assert botkeeper(home, "uninstall", "cron", CRONTAB_FILE=str(crontab)).returncode == 0
    assert str(home) + " " not in crontab.read_text() and str(other) in crontab.read_text()
    assert botkeeper(other, "uninstall", "cron", CRONTAB_FILE=str(crontab)).returncode == 0
    assert crontab.read_bytes() == original  # byte for byte
    # The line cron runs is a real command: sh runs it (the marker is a shell comment).
    assert subprocess.run(["sh", "-n", "-c", ours[1].split(" ", 5)[5]]).returncode == 0


def test_ensure_starts_only_what_is_not_running(fake_home):
    first = botkeeper(fake_home, "ensure")
    assert first.returncode == 0 and "was not running: starting it" in first.stdout, first.stderr
    sup = read_state(fake_home)["supervisor"]["pid"]
    again = botkeeper(fake_home, "ensure")
    assert again.returncode == 0 and again.stdout == ""
    assert read_state(fake_home)["supervisor"]["pid"] == sup


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile").read_text()
    for needed in ("STOPSIGNAL SIGTERM", "EXPOSE 8080", 'CMD ["python", "-m", "botkeeper", "probe"]', "USER 10001",
                   "VOLUME"):
        assert needed in text


def test_kubernetes_manifests_validate_and_split_liveness_from_readiness():
    import yaml

    files = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
    validate = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([str(validate), "--strict", *map(str, files)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    token = next(e for e in container["env"] if e["name"] == "TELEGRAM_BOT_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["name"] == "botkeeper"


def test_compose_file_fits_the_stop_and_health_contract():
    import yaml

    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["botkeeper"]
    assert service["restart"] == "unless-stopped" and service["env_file"]
    assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "botkeeper", "probe"]
    assert int(service["stop_grace_period"].rstrip("s")) >= 10 + 2  # production KILL_TIMEOUT + margin


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_pm2_ecosystem_file_runs_the_supervisor_in_pm2_mode():
    script = ("const a = require(process.argv[1]).apps[0];"
              "console.log(JSON.stringify({args: a.args, interp: a.interpreter, outer: a.env.BOTKEEPER_OUTER,"
              " kill: a.kill_timeout, stop: a.stop_exit_codes, tree: a.treekill}))")
    out = subprocess.run(["node", "-e", script, str(ROOT / "deploy" / "pm2" / "ecosystem.config.js")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"args": ["-m", "botkeeper", "start"], "interp": "none", "outer": "pm2",
                                      "kill": 20000, "stop": [78], "tree": False}


def test_webhook_replica_manifests_validate_and_fit_together():
    """deploy/k8s/webhook/: 2+ replicas that never all go away, /telegram routed to WEBHOOK_PORT,
    readiness on /health, secrets from the Secret, a Redis the REDIS_URL points at."""
    import yaml

    from botkeeper.config import KNOBS

    folder = ROOT / "deploy" / "k8s" / "webhook"
    files = sorted(folder.glob("*.yaml"))
    validate = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([str(validate), "--strict", *map(str, files)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for f in files for d in yaml.safe_load_all(f.read_text()) if d}
    deployment = docs[("Deployment", "botkeeper-webhook")]
    spec = deployment["spec"]
    assert spec["replicas"] >= 2 and spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = spec["template"]["metadata"]["labels"]
    container = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["TELEGRAM_MODE"]["value"] == "webhook" and env["WEBHOOK_URL"]["value"].endswith("/telegram")
    for secret in ("TELEGRAM_BOT_TOKEN", "WEBHOOK_SECRET", "REDIS_URL"):
        assert env[secret]["valueFrom"]["secretKeyRef"]["name"] == "botkeeper-webhook"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["telegram"] == int(env["WEBHOOK_PORT"]["value"]) == KNOBS["webhook_port"].default
    assert all(v.get("emptyDir") is not None for v in spec["template"]["spec"]["volumes"])  # no shared RWO volume
    service = docs[("Service", "botkeeper-webhook")]
    assert service["spec"]["selector"] == labels
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}["telegram"] == "telegram"
    path = docs[("Ingress", "botkeeper-webhook")]["spec"]["rules"][0]["http"]["paths"][0]
    assert path["path"] == "/telegram" and path["backend"]["service"] == {"name": "botkeeper-webhook",
                                                                       "port": {"name": "telegram"}}
    pdb = docs[("PodDisruptionBudget", "botkeeper-webhook")]["spec"]
    assert pdb["selector"]["matchLabels"] == labels and pdb["minAvailable"] >= 1
    redis = docs[("StatefulSet", "botkeeper-redis")]["spec"]
    assert redis["replicas"] == 1 and docs[("Service", "botkeeper-redis")]["spec"]["selector"] == \
        redis["template"]["metadata"]["labels"]
    url = docs[("Secret", "botkeeper-webhook")]["stringData"]["redis-url"]
    assert "@botkeeper-redis:6379" in url
    KNOBS["redis_url"].parse(url)
