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


def _raise_exit(signum, frame):  # noqa: ARG001
    # waitress's run loop is built to stop on SystemExit/KeyboardInterrupt: it then closes its
    # sockets and lets in-flight requests finish.
    raise SystemExit(0)


def serve(settings, threads: int = THREADS) -> int:
    app = create_app(settings, history=StoreHistory(settings))
    # Compile the templates now, not while the first visitor (and everyone behind them) waits.
    for name in ("index.html", "error.html"):
        app.jinja_env.get_template(name)
    try:
        server = create_server(
            app, host=settings.host, port=settings.port, threads=threads,
            ident="botkeeper",
            max_request_header_size=16 * 1024,
            max_request_body_size=64 * 1024,
            channel_timeout=30,
            connection_limit=200,
            clear_untrusted_proxy_headers=True,
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
    log.info("web: status page on http://%s:%s/ (waitress, %d threads)%s", settings.host,
             server.effective_port, threads, " [DEMO]" if settings.demo_active else "")
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        stop_background(app)
        server.close()
    log.info("web: stopped")
    return 0
