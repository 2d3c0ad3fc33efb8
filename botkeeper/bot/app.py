"""Build the python-telegram-bot Application and run it as the supervised `bot` component.

Exit codes: 0 after SIGTERM/SIGINT, 78 (EX_CONFIG) when the token is missing or Telegram rejects
it (at start or later), 1 when the user's handlers cannot be loaded or something unexpected breaks.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
import signal
import ssl
import sys
import threading

from telegram import Update
from telegram.error import InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application, ApplicationBuilder

from .. import logs
from ..causes import Cause
from ..runfiles import write_exit_note
from ..config import EX_CONFIG, KNOBS, load_or_exit
from . import delivery, userhandlers
from .health import Health, ObservingRequest

log = logging.getLogger("botkeeper.bot")
SHUTDOWN_LIMIT = 5.0  # seconds for a graceful stop; the supervisor SIGKILLs later anyway
MAX_START_DELAY = 30.0


def build_application(settings, health: Health | None = None, user_handlers: bool = True) -> Application:
    """The bot: the user's handlers (HANDLERS), then botkeeper.attach() (heartbeat, error handler,
    built-ins where the user has none), rate limiting, and a request layer that reports every Bot
    API outcome to `health` (the heartbeat's source)."""
    from .keeper import attach  # here: botkeeper.bot.keeper imports this package

    if health is None:
        health = Health(logs.Redactor(settings.secrets() + [settings.bot_token or ""]))
    api = settings.bot_api_base_url
    tls = {"verify": _tls_context(api)}
    application = (
        ApplicationBuilder()
        .token(settings.bot_token)
        .base_url(f"{api}/bot")
        .base_file_url(f"{api}/file/bot")
        .request(ObservingRequest(health, connection_pool_size=16, httpx_kwargs=tls))
        .get_updates_request(ObservingRequest(health, connection_pool_size=2, httpx_kwargs=tls))
        # Every new message waits for Telegram's limits and a 429 is waited out, shared with the
        # outbox (bot/delivery.py); getUpdates is never throttled by it.
        .rate_limiter(delivery.GateLimiter.from_settings(settings))
        .build()
    )
    described: list = []
    if user_handlers:
        loaded = userhandlers.load(settings, application)
        if loaded:
            log.info("user handlers loaded from %s", loaded.path)
            described = loaded.commands
    attach(application, settings, health=health, commands=described)
    return application


def _tls_context(api_url: str) -> ssl.SSLContext:
    """One TLS context for both HTTP clients: loading the CA bundle costs ~45 ms each time, and a
    restart's time to first answer is what the supervisor is judged on."""
    if api_url.startswith("https://"):
        import httpx

        return httpx.create_ssl_context()  # certifi's CAs, or SSL_CERT_FILE/SSL_CERT_DIR
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # plain http (emulator): TLS unused, verifying if ever


async def _start(application: Application, health: Health, settings) -> None:
    """getMe (retried while Telegram is unreachable), then polling. InvalidToken propagates."""
    delay = 0.5  # the demo's emulator may still be starting next to us
    while True:
        try:
            await application.initialize()
            break
        except RetryAfter as exc:
            await asyncio.sleep(exc.retry_after if isinstance(exc.retry_after, (int, float))
                                else exc.retry_after.total_seconds())
        except NetworkError:  # reported by the request layer; TimedOut is a NetworkError too
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_START_DELAY)
    if application.post_init:  # as run_polling() does: attach()'s built-ins and menu, the user's hook
        await application.post_init(application)
    if settings.telegram_mode == "webhook":
        await _start_webhook(application, health, settings)
        delivery.start(application, settings)
        return
    shared = application.bot_data["botkeeper.keeper"].shared
    if shared is not None:  # REDIS_URL: one poller per token; the others stand by (no 409 fight)
        await _wait_for_poller_lock(shared, health, settings)
    await _start_polling(application, health, settings)
    await application.start()
    health.polling_started()
    delivery.start(application, settings)  # the persistent outbox (botkeeper/bot/outbox.py)
    if shared is not None:
        await _keep_poller_lock(application, shared, health, settings)


async def _start_polling(application: Application, health: Health, settings) -> None:
    await application.updater.start_polling(
        timeout=dtm.timedelta(seconds=settings.poll_timeout),
        bootstrap_retries=-1,  # deleteWebhook retried with backoff; a rejected token still raises
        drop_pending_updates=False,  # messages sent while we were down get answered
        allowed_updates=Update.ALL_TYPES,
        error_callback=health.poll_error,
    )


def poller_lock_ttl(settings) -> float:
    """How long the poller lock outlives its holder: a few heartbeats, so a killed poller's standby
    takes over within seconds, and a slow beat never hands the token to a second poller."""
    return max(3 * settings.heartbeat_interval, 1.0)


async def _wait_for_poller_lock(shared, health: Health, settings) -> None:
    """Poll once the lock is ours. Redis down: stand by (REDIS_DOWN_POLLING=wait, the default: two
    copies that both poll would answer twice), or poll alone (=alone: the operator knows this is
    the one copy). Either way the heartbeat carries redis_down_since: degraded, alerted."""
    while (holder := await shared.hold_poller(poller_lock_ttl(settings))) is not None:
        if holder.startswith("unknown") and settings.redis_down_polling == "alone":
            log.warning("Redis unreachable: polling from this copy alone (REDIS_DOWN_POLLING=alone)")
            return
        health.standby("nobody known: Redis is unreachable (REDIS_DOWN_POLLING=wait)"
                       if holder.startswith("unknown") else holder)
        await asyncio.sleep(poller_lock_ttl(settings) / 3)
    if health.state == "standby":
        log.info("the poller lock is ours: polling Telegram from this copy")
        health.state, health.detail = "starting", "took over polling"


async def _keep_poller_lock(application: Application, shared, health: Health, settings) -> None:
    """Renew the lock while polling; should it be lost (this loop blocked past its expiry and
    another copy took over), stop polling and stand by again."""
    while True:
        await asyncio.sleep(poller_lock_ttl(settings) / 3)
        holder = await shared.hold_poller(poller_lock_ttl(settings))
        if holder is None or holder.startswith("unknown"):
            continue
        log.warning("poller lock lost to %s: polling stops here", holder)
        await application.updater.stop()
        health.standby(holder)
        await _wait_for_poller_lock(shared, health, settings)
        await _start_polling(application, health, settings)
        health.polling_started()


async def _start_webhook(application: Application, health: Health, settings) -> None:
    """Serve /telegram first, then setWebhook (retried while Telegram is unreachable): the first
    delivery finds us listening. Every replica registers the same URL; none deletes it at stop."""
    from .webhook import WebhookServer, watch_webhook_info  # webhook mode only

    await application.start()  # the update queue is processed from here on
    server = WebhookServer(application, settings.webhook_secret, settings.webhook_port)
    await server.start()
    application.bot_data["botkeeper.webhook"] = server
    health.reporters.append(server.report)
    log.info("webhook server listening on port %s, path /telegram", server.port)
    delay = 0.5
    while True:
        try:
            await application.bot.set_webhook(settings.webhook_url, secret_token=settings.webhook_secret,
                                              allowed_updates=Update.ALL_TYPES, drop_pending_updates=False)
            break
        except RetryAfter as exc:
            await asyncio.sleep(exc.retry_after if isinstance(exc.retry_after, (int, float))
                                else exc.retry_after.total_seconds())
        except NetworkError:  # reported by the request layer
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_START_DELAY)
    health.webhook_started(settings.webhook_url)
    await watch_webhook_info(application, health, settings.webhook_url, settings.webhook_check_interval)


async def _shutdown(application: Application) -> None:
    server = application.bot_data.pop("botkeeper.webhook", None)
    if server is not None:  # no new deliveries: Telegram retries them at another replica
        await server.stop()
    await delivery.stop(application)  # first: sends on the wire finish and are recorded
    if application.updater is not None and application.updater.running:
        try:
            await application.updater.stop()
        except TelegramError:
            pass  # the polling task ended with this error; it was reported when it happened
    if application.running:
        await application.stop()
        if application.post_stop:
            await application.post_stop(application)
    await application.shutdown()
    if application.post_shutdown:
        await application.post_shutdown(application)
    shared = application.bot_data["botkeeper.keeper"].shared
    if shared is not None:
        await shared.release_poller()  # a standby takes over at once, not after the lock expires
        await shared.close()


def _rejected(settings, health: Health) -> int:
    """Say once why we stop, in the log, in the heartbeat and in the exit note the supervisor reads:
    nobody has to guess it from our last log line."""
    bot_id = (settings.bot_token or "").split(":", 1)[0]
    server = "" if settings.bot_api_base_url == KNOBS["api_base_url"].default else f" by {settings.bot_api_base_url}"
    reason = (f"Telegram rejected the bot token {bot_id}:***{server} (HTTP {health.fatal_status or 401}): it was"
              " revoked or mistyped. Put the token from @BotFather into TELEGRAM_BOT_TOKEN (Replit Secrets or .env)")
    log.error("%s; not retrying (exit %s).", reason, EX_CONFIG)
    health.state, health.detail, health.cause = "fatal", reason, Cause.TOKEN_REJECTED
    write_exit_note(Cause.TOKEN_REJECTED, reason)
    return EX_CONFIG


async def serve(settings) -> int:
    health = Health(logs.Redactor(settings.secrets() + [settings.bot_token or ""]))
    application = build_application(settings, health)
    keeper = application.bot_data["botkeeper.keeper"]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)  # only sets a flag; this coroutine acts
    keeper.start_heartbeat()  # beating while we connect: an outage at start is reported, not silent
    startup = asyncio.create_task(_start(application, health, settings))
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(health.fatal.wait())]
    code = 0
    try:
        await asyncio.wait([startup, *waiters], return_when=asyncio.FIRST_COMPLETED)
        if startup.done() and startup.exception() is not None:
            raise startup.exception()
        if startup.done():
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if health.fatal.is_set():
            code = _rejected(settings, health)
    except InvalidToken:
        code = _rejected(settings, health)
    finally:
        for task in (startup, *waiters):
            task.cancel()
        if not code:
            health.state, health.detail = "stopping", "stopping on request"
        keeper.work.stopping = True  # from here a failed update is left for the next bot, not done
        await keeper.stopped()
        if code:  # the final cleanup getUpdates fails with the same rejected token: nothing new to say
            logging.getLogger("telegram.ext.Updater").setLevel(logging.CRITICAL)
        limit_passed = False
        try:  # running handlers get SHUTDOWN_LIMIT to finish; the rest is left for the next bot
            await asyncio.wait_for(_shutdown(application), SHUTDOWN_LIMIT)
        except asyncio.TimeoutError:
            limit_passed = True
            log.warning("graceful stop: handlers still running after %.0f s", SHUTDOWN_LIMIT)
        except (TelegramError, RuntimeError) as exc:
            log.warning("graceful stop incomplete: %s", exc)
        await keeper.leave_unfinished(limit_passed)
    if not code:
        log.info("bot stopped")
    return code


class _DropRejectedTokenTraceback(logging.Filter):
    """python-telegram-bot logs a long traceback when the token is rejected; we say it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InvalidToken))


def _route_stray_tracebacks(logger: logging.Logger) -> None:
    """Tracebacks Python would print straight to stderr (threads, __del__, at exit) go through the
    redacting log handler instead: an exception text may contain the token."""

    def unraisable(info) -> None:  # noqa: ANN001 - sys.UnraisableHookArgs
        logger.warning("ignored exception in %r: %s: %s", info.object, info.exc_type.__name__, info.exc_value)

    sys.excepthook = lambda kind, value, tb: logger.error("uncaught exception", exc_info=(kind, value, tb))
    threading.excepthook = lambda args: logger.error(
        "uncaught exception in thread %s", args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
    sys.unraisablehook = unraisable


def main(argv: list[str] | None = None) -> int:
    """`python main.py`: the bot component."""
    settings = load_or_exit()
    logger = logs.setup(settings, "bot")
    logging.captureWarnings(True)  # library warnings go through the redacting handler too
    _route_stray_tracebacks(logger)
    level = max(logging.getLogger().level, logging.INFO)
    for chatty in ("telegram", "asyncio"):  # DEBUG there dumps every request and message
        logging.getLogger(chatty).setLevel(level)
    logging.getLogger("telegram.ext").addFilter(_DropRejectedTokenTraceback())
    if not settings.bot_token:
        reason = "TELEGRAM_BOT_TOKEN is not set: add it in Replit Secrets or .env (or DEMO=auto for the offline demo)"
        logger.error("%s", reason)
        write_exit_note(Cause.NEEDS_CONFIG, reason)
        return EX_CONFIG
    if settings.demo_active:
        logger.warning("DEMO: talking to the offline Bot API emulator at %s; set TELEGRAM_BOT_TOKEN to go live",
                       settings.bot_api_base_url)
    try:
        return asyncio.run(serve(settings))
    except userhandlers.HandlersMissing as exc:
        logger.error("%s", exc)
        return EX_CONFIG
    except userhandlers.UserHandlersError as exc:
        logger.error("cannot load your handlers: %s", exc)
        return 1
    except KeyboardInterrupt:
        return 0
    except Exception:  # process boundary: one redacted traceback, then a meaningful exit code
        logger.exception("bot crashed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
