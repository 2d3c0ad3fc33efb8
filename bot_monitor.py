"""The `monitor` component (the supervisor runs it): bot heartbeat freshness, memory/CPU/uptime limits.

See botkeeper/alerting/monitor.py. SIGTERM ends it cleanly (exit 0).
"""

from botkeeper import logs
from botkeeper.config import load_or_exit
from botkeeper.fsutil import ensure_dirs_or_exit


def main() -> int:
    settings = load_or_exit()
    ensure_dirs_or_exit(settings.data_dir)
    logs.setup(settings, "monitor")
    from botkeeper.alerting.monitor import main as run

    return run(settings)


if __name__ == "__main__":
    raise SystemExit(main())
