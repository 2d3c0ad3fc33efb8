"""Serve the app with waitress (never Flask's development server); stop cleanly on SIGTERM."""

from __future__ import annotations

import errno
import logging
import signal

from waitress import create_server

from . import create_app, start_background, stop_background
from .history import StoreHistory

log = logging.getLogger(__name__)
THREADS = 8
EXIT_PORT_BUSY = 1
# Open connections cost a waitress channel (a few KB) and a file descriptor, not a thread: a slow
# client that dribbles its headers holds no worker. So the limit can sit far above what an uptime
# pinger and a few visitors need; at the limit waitress stops accepting, and then /health times
# out too. 500 slow clients measured with bench/slow_clients.py.
CONNECTION_LIMIT = 2000
SPARE_FDS = 64  # log files, the history database, psutil's /proc reads, the listening socket


def _connection_limit(wanted: int = CONNECTION_LIMIT) -> int:
    """Raise the soft open-files limit so `wanted` connections fit; fewer if the hard limit says so."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + SPARE_FDS
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(100, min(wanted, soft - SPARE_FDS))


def _raise_exit(signum, frame):  # noqa: ARG001
    # waitress's run loop is built to stop on SystemExit/KeyboardInterrupt: it then closes its
    # sockets and lets in-flight requests finish.
    raise SystemExit(0)


def serve(settings, threads: int = THREADS) -> int:
    app = create_app(settings, history=StoreHistory(settings))
    # Compile the templates now, not while the first visitor (and everyone behind them) waits.
    for name in ("index.html", "error.html"):
        app.jinja_env.get_template(name)
    limit = _connection_limit()
    try:
        server = create_server(
            app, host=settings.host, port=settings.port, threads=threads,
            ident="botkeeper",
            max_request_header_size=16 * 1024,
            max_request_body_size=64 * 1024,
            channel_timeout=30,
            connection_limit=limit,
            # poll(), not select(): select() cannot watch descriptors above 1024.
            asyncore_use_poll=True,
            # X-Forwarded-For reaches the app, which believes it only from TRUSTED_PROXIES (auth.py).
            clear_untrusted_proxy_headers=False,
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            log.error("web: port %s on %s is already in use (PORT=%s): another program or an earlier "
                      "copy holds it; set PORT to a free port", settings.port, settings.host, settings.port)
        else:
            log.error("web: cannot listen on %s:%s (HOST/PORT): %s", settings.host, settings.port,
                      exc.strerror or exc)
        return EXIT_PORT_BUSY
    # waitress warns on every queued task under load; a busy page is not worth a log line each.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _raise_exit)
    if settings.restart_token and len(settings.restart_token) < 16:
        log.warning("web: RESTART_TOKEN is only %d characters; use 16 or more random ones",
                    len(settings.restart_token))
    start_background(app)
    log.info("web: status page on http://%s:%s/ (waitress, %d threads, at most %d connections)%s",
             settings.host, server.effective_port, threads, limit, " [DEMO]" if settings.demo_active else "")
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        stop_background(app)
        server.close()
    log.info("web: stopped")
    return 0
