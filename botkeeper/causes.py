"""Why something happened: one `str` Enum of restart, incident and verdict causes.

A cause travels as this value from the place that decided (the restart policy, the monitor, the
bot's own exit note, an operator) through the control channel into the `cause` column of the
store, and out to alerts, the page, `history` and the `reason` label of /metrics. The human
sentence beside it is a detail: shown, redacted, never parsed back.
"""

from __future__ import annotations

from enum import Enum


class Cause(str, Enum):
    # the process ended or was ended because of a failure
    CRASH = "crash"  # exited (or was killed) without being asked
    CRASH_LOOP = "crash-loop"  # quick crashes in a row: backoff or errored
    STALE_HEARTBEAT = "stale-heartbeat"  # alive but its event loop stopped beating
    LOOP_BLOCKED = "loop-blocked"  # the bot's watchdog reports its event loop blocked past BLOCK_LIMIT
    MEMORY = "memory"  # above MAX_MEMORY_MB for several checks
    CPU = "cpu"  # above MAX_CPU_PERCENT for CPU_WINDOW
    POISON_UPDATE = "poison-update"  # one update keeps hanging or killing the bot
    DISK_FULL = "disk-full"  # the heartbeat or the history cannot be written
    CORRUPT_FILE = "corrupt-file"  # a file of ours was unreadable and was set aside
    STATE_UNWRITABLE = "state-unwritable"  # the supervisor cannot write run/state.json (readers ask it instead)
    LOG_ROTATION = "log-rotation"  # a log cannot be rotated: its writes are capped at LOG_MAX_BYTES
    NEW_ERROR = "new-error"  # a handler error of a kind (fingerprint) not seen before
    WEB_UNRESPONSIVE = "web-unresponsive"  # /health stopped answering connections
    SUPERVISOR_DOWN = "supervisor-down"  # no supervisor holds the lock
    SUPERVISOR_HUNG = "supervisor-hung"  # a supervisor holds the lock but does not answer
    STUCK = "stuck"  # a component the supervisor should have started long ago
    # Telegram's side
    TELEGRAM_OUTAGE = "telegram-outage"  # Telegram cannot be reached from here
    CONFLICT = "conflict"  # another program polls with this token (409)
    STANDBY = "standby"  # polling with REDIS_URL: another copy holds the poller lock; this one waits
    WEBHOOK_FAILING = "webhook-failing"  # Telegram cannot deliver to our webhook (getWebhookInfo)
    REDIS_UNREACHABLE = "redis-unreachable"  # REDIS_URL set, Redis unreachable or refusing our password
    TOKEN_REJECTED = "token-rejected"  # Telegram answered 401/404 to the token
    NEEDS_CONFIG = "needs-config"  # a setting or command must be fixed (exit 78)
    # planned or asked for
    MAX_UPTIME = "max-uptime"  # the planned restart after MAX_UPTIME_HOURS
    OPERATOR = "operator"  # a person asked: CLI, page, Telegram command
    DEPLOY = "deploy"  # an update was rolled out
    ROLLBACK = "rollback"  # an update was rolled back
    RELOAD = "reload"  # the configuration was re-read and this component's command or settings changed
    INITIAL_START = "initial-start"  # the first start of a component by this supervisor
    SHUTDOWN = "shutdown"  # the bundle is stopping
    # verdict-only
    STARTING = "starting"  # within its start grace: not yet healthy, not yet a failure
    STOPPED = "stopped"  # stopped on purpose
    STATE_UNKNOWN = "state-unknown"  # run/state.json unreadable for a moment
    HEARTBEAT_INVALID = "heartbeat-invalid"  # corrupt, oversized or from the future
    COMPONENT_DOWN = "component-down"  # a component other than the bot is not running
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value

    @property
    def planned(self) -> bool:
        """A restart for this cause was wanted: it is not a failure and opens no incident."""
        return self in PLANNED

    @property
    def hang(self) -> bool:
        """The process is known hung: it cannot act on SIGTERM, so it is killed at once."""
        return self in HANGS

    @property
    def label(self) -> str:
        return LABELS.get(self, self.value.replace("-", " "))

    @classmethod
    def parse(cls, value: object, default: "Cause | None" = None) -> "Cause":
        """The cause named by a stored or received value; `default` (UNKNOWN) for anything else.

        Only exact values are accepted: a sentence is never read for keywords."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            return default if default is not None else cls.UNKNOWN


# Causes a restart can have: the `reason` label values of botkeeper_restarts_total (bounded).
RESTART_CAUSES = (Cause.CRASH, Cause.CRASH_LOOP, Cause.STALE_HEARTBEAT, Cause.LOOP_BLOCKED, Cause.MEMORY, Cause.CPU, Cause.POISON_UPDATE,
                  Cause.DISK_FULL, Cause.TELEGRAM_OUTAGE, Cause.WEB_UNRESPONSIVE, Cause.STUCK, Cause.NEEDS_CONFIG,
                  Cause.MAX_UPTIME, Cause.OPERATOR, Cause.DEPLOY, Cause.ROLLBACK, Cause.RELOAD, Cause.UNKNOWN)

HANGS = frozenset({Cause.STALE_HEARTBEAT, Cause.LOOP_BLOCKED})

PLANNED = frozenset({Cause.MAX_UPTIME, Cause.OPERATOR, Cause.DEPLOY, Cause.RELOAD, Cause.INITIAL_START, Cause.SHUTDOWN,
                     Cause.STOPPED, Cause.STARTING})

LABELS = {
    Cause.CRASH: "crashed",
    Cause.CRASH_LOOP: "crash loop",
    Cause.STALE_HEARTBEAT: "heartbeat stale (hung)",
    Cause.LOOP_BLOCKED: "event loop blocked (hung)",
    Cause.MEMORY: "memory limit",
    Cause.CPU: "CPU limit",
    Cause.POISON_UPDATE: "poison update",
    Cause.DISK_FULL: "disk full",
    Cause.CORRUPT_FILE: "corrupt file set aside",
    Cause.STATE_UNWRITABLE: "run/state.json cannot be written",
    Cause.LOG_ROTATION: "log rotation failing",
    Cause.NEW_ERROR: "new kind of error",
    Cause.WEB_UNRESPONSIVE: "status page not answering",
    Cause.SUPERVISOR_DOWN: "supervisor not running",
    Cause.SUPERVISOR_HUNG: "supervisor not answering",
    Cause.STUCK: "not started in time",
    Cause.TELEGRAM_OUTAGE: "Telegram unreachable",
    Cause.CONFLICT: "another poller (409 Conflict)",
    Cause.STANDBY: "standby (another copy polls)",
    Cause.WEBHOOK_FAILING: "webhook deliveries failing",
    Cause.REDIS_UNREACHABLE: "Redis unreachable",
    Cause.TOKEN_REJECTED: "token rejected by Telegram",
    Cause.NEEDS_CONFIG: "needs configuration",
    Cause.MAX_UPTIME: "planned restart (max uptime)",
    Cause.OPERATOR: "asked by an operator",
    Cause.DEPLOY: "deploy",
    Cause.ROLLBACK: "rollback",
    Cause.RELOAD: "settings reloaded",
    Cause.INITIAL_START: "initial start",
    Cause.SHUTDOWN: "shutdown",
    Cause.STARTING: "starting",
    Cause.STOPPED: "stopped",
    Cause.STATE_UNKNOWN: "state unknown for a moment",
    Cause.HEARTBEAT_INVALID: "heartbeat invalid",
    Cause.COMPONENT_DOWN: "a component is down",
    Cause.UNKNOWN: "unknown",
}
