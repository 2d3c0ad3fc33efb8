"""Telegram's sending limits as a pure decision: which waiting send may go now, and when to look again.

Limits (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this): about 30
messages per second overall, one per second in a private chat, 20 per minute in a group (negative
chat ids). A 429 answer pauses what its `retry_after` says: that chat, or every chat.

Why completions, not dispatches: a send counts from the moment it is handed to the network until
one window after its answer arrived. Telegram sees a request somewhere between the two, so
counting `in flight + answered within the window` can never let Telegram see more than the limit
in any window, whatever the network's jitter. It costs one round-trip per window of throughput.

All functions take plain data and `now` (monotonic seconds); `Windows` is the only state.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Sequence

GLOBAL_WINDOW = 1.0
GROUP_WINDOW = 60.0


@dataclass(frozen=True)
class Limits:
    per_second: int = 30  # messages per second, all chats together
    chat_interval: float = 1.0  # seconds between two messages to one private chat
    group_per_minute: int = 20  # messages per minute to one group


@dataclass
class Windows:
    """What has been sent recently: answered sends by time, sends in flight, pauses from 429s."""

    answered: deque = field(default_factory=deque)  # monotonic times of answered sends (all chats)
    chat_answered: dict[int, deque] = field(default_factory=dict)  # chat -> times of answered sends
    in_flight: dict[int, int] = field(default_factory=dict)  # chat -> sends in flight
    paused_until: float = 0.0  # every chat (a global 429)
    chat_paused_until: dict[int, float] = field(default_factory=dict)

    @property
    def flying(self) -> int:
        return sum(self.in_flight.values())


def is_group(chat_id: int | str) -> bool:
    """Negative ids are groups; "@name" is a channel, limited like a group."""
    return isinstance(chat_id, str) or chat_id < 0


def _forget(times: deque, before: float) -> None:
    while times and times[0] <= before:
        times.popleft()


def chat_ready_at(w: Windows, limits: Limits, chat_id: int, now: float) -> float | None:
    """Earliest time a new message to this chat is allowed by the chat's own limits (global limit
    not considered); None while a message to it is in flight (one at a time keeps the order)."""
    if w.in_flight.get(chat_id):
        return None
    at = max(now, w.chat_paused_until.get(chat_id, 0.0))
    times = w.chat_answered.get(chat_id)
    if times:
        if is_group(chat_id):
            _forget(times, now - GROUP_WINDOW)
            if len(times) >= limits.group_per_minute:
                at = max(at, times[-limits.group_per_minute] + GROUP_WINDOW)
        else:
            at = max(at, times[-1] + limits.chat_interval)
    return at


def global_ready_at(w: Windows, limits: Limits, now: float) -> float:
    _forget(w.answered, now - GLOBAL_WINDOW)
    at = max(now, w.paused_until)
    busy = len(w.answered) + w.flying
    if busy >= limits.per_second:
        over = busy - limits.per_second  # answered sends that must leave the window first
        if over < len(w.answered):
            at = max(at, w.answered[over] + GLOBAL_WINDOW)
        else:  # only sends in flight fill the window: look again when one is answered
            at = float("inf")
    return at


def choose(waiting: Sequence[tuple[int, int, int]], w: Windows, limits: Limits,
           now: float) -> tuple[int | None, float | None]:
    """Which waiting send goes now. `waiting` holds (priority, sequence, chat_id), lower priority
    value first. Returns (index into waiting or None, when to look again or None for "on the next
    answer"). Only a chat's first waiter (by priority, then sequence) is considered, and not while
    a send to that chat is in flight, so a chat's messages leave one at a time and in order."""
    if not waiting:
        return None, None
    glob = global_ready_at(w, limits, now)
    soonest: float | None = None
    seen: set[int] = set()
    for index in sorted(range(len(waiting)), key=lambda i: waiting[i][:2]):
        chat = waiting[index][2]
        if chat in seen:
            continue
        seen.add(chat)
        at = chat_ready_at(w, limits, chat, now)
        if at is None:
            continue
        at = max(at, glob)
        if at <= now:
            return index, None
        if at != float("inf"):
            soonest = at if soonest is None else min(soonest, at)
    return None, soonest


def dispatched(w: Windows, chat_id: int) -> None:
    w.in_flight[chat_id] = w.in_flight.get(chat_id, 0) + 1


def answered(w: Windows, chat_id: int, now: float) -> None:
    """A send to chat_id ended (any answer, or none): it counts in the windows from now."""
    left = w.in_flight.get(chat_id, 0) - 1
    if left > 0:
        w.in_flight[chat_id] = left
    else:
        w.in_flight.pop(chat_id, None)
    w.answered.append(now)
    times = w.chat_answered.setdefault(chat_id, deque())
    times.append(now)
    keep = 1 if not is_group(chat_id) else None
    if keep:
        while len(times) > keep:
            times.popleft()
    else:
        _forget(times, now - GROUP_WINDOW)
    if not w.in_flight.get(chat_id) and len(w.chat_answered) > 4096:
        _drop_idle(w, now)


def _drop_idle(w: Windows, now: float) -> None:
    """Forget chats whose last answer left every window: memory stays bounded with many chats."""
    for chat in [c for c, t in w.chat_answered.items() if not t or t[-1] <= now - GROUP_WINDOW]:
        del w.chat_answered[chat]
    for chat in [c for c, t in w.chat_paused_until.items() if t <= now]:
        del w.chat_paused_until[chat]


def seed(w: Windows, answers: Iterable[tuple[float, int | str]]) -> None:
    """Sends answered before this process started (times on this clock, oldest first) fill the
    windows as if made here: a bot restarted mid-broadcast must not exceed the limits."""
    for at, chat in answers:
        answered(w, chat, at)


# Several chats told to wait within this many seconds means the bot as a whole is throttled.
GLOBAL_SIGNS = 3
GLOBAL_SIGN_WINDOW = 1.0


def pause_scope(recent_429s: Iterable[tuple[float, int | None]], now: float) -> str:
    """"global" or "chat" for a 429 just received, from the recent 429s as (time, chat or None).
    Telegram does not say which limit was hit: a 429 without a chat, or 429s for GLOBAL_SIGNS
    different chats within GLOBAL_SIGN_WINDOW, is a global one; otherwise only that chat waits."""
    chats = set()
    for at, chat in recent_429s:
        if at < now - GLOBAL_SIGN_WINDOW:
            continue
        if chat is None:
            return "global"
        chats.add(chat)
    return "global" if len(chats) >= GLOBAL_SIGNS else "chat"


def pause(w: Windows, chat_id: int | None, until: float) -> None:
    if chat_id is None:
        w.paused_until = max(w.paused_until, until)
    else:
        w.chat_paused_until[chat_id] = max(w.chat_paused_until.get(chat_id, 0.0), until)


def backoff(attempts: int, first: float = 1.0, cap: float = 60.0) -> float:
    """Delay before retry number `attempts` (1-based) after a network error or 5xx."""
    return min(cap, first * (2 ** max(0, attempts - 1)))
