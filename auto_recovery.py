"""auto_recovery: the outer watchdog beside run_24_7.sh (start_24_7.sh starts it; the supervisor
relaunches it if it is gone). One copy per bundle: a second one exits 0 at once.

See botkeeper/supervise/recovery.py. Logs to logs/auto_recovery.log; SIGTERM ends it cleanly (exit 0).
"""

from botkeeper import logs
from botkeeper.config import load_or_exit
from botkeeper.fsutil import ensure_dirs_or_exit, private_umask


def main() -> int:
    settings = load_or_exit()
    private_umask()
    ensure_dirs_or_exit(settings.run_dir, settings.logs_dir, settings.data_dir)
    logs.setup(settings, "auto_recovery", to_file=True)
    from botkeeper.supervise.recovery import main as run

    return run(settings)


if __name__ == "__main__":
    raise SystemExit(main())
