"""Live reload (pure): which components a new configuration restarts, starts, stops or just updates.

The supervisor re-reads the environment file and botkeeper.toml (`reload`, SIGHUP) and asks `plan()`
what to do. Thresholds and limits must apply without restarting the bot:
- a component whose command or environment changed is restarted alone (cause reload);
- `web` and `monitor` read the settings once at their start, so any changed setting restarts those
  two (the bot keeps running unless its own command or environment changed);
- restart limits (kill_timeout, backoff, ...) are the supervisor's own: the new spec replaces the
  old one in place;
- a component new in the configuration is started; one no longer in it is stopped and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import KNOBS, Settings

READS_SETTINGS_AT_START = ("web", "monitor")


@dataclass(frozen=True)
class ReloadPlan:
    changed: tuple[str, ...]  # environment variable names of the knobs whose value changed
    restart: tuple[str, ...]  # running components to restart (command, environment, or settings they read)
    start: tuple[str, ...]  # components new in the configuration
    remove: tuple[str, ...]  # components no longer in it
    respec: tuple[str, ...]  # components whose limits changed (the new spec replaces the old one)

    @property
    def nothing(self) -> bool:
        return not (self.changed or self.restart or self.start or self.remove or self.respec)

    def as_dict(self) -> dict[str, list[str]]:
        return {"changed": list(self.changed), "restart": list(self.restart), "start": list(self.start),
                "remove": list(self.remove), "respec": list(self.respec)}


def plan(old: Settings, new: Settings) -> ReloadPlan:
    changed = tuple(knob.env for name, knob in KNOBS.items() if getattr(old, name) != getattr(new, name))
    before = {c.name: c for c in old.components}
    after = {c.name: c for c in new.components}
    restart, respec = [], []
    for name, spec in after.items():
        prev = before.get(name)
        if prev is None:
            continue
        if prev.command != spec.command or prev.env != spec.env or prev.heartbeat != spec.heartbeat:
            restart.append(name)
        elif changed and name in READS_SETTINGS_AT_START:
            restart.append(name)
        if prev != spec:
            respec.append(name)
    return ReloadPlan(changed=changed, restart=tuple(restart), start=tuple(n for n in after if n not in before),
                      remove=tuple(n for n in before if n not in after), respec=tuple(respec))
