"""Small 4xx/5xx answers, JSON for API clients and HTML for people; never a traceback."""

from __future__ import annotations

import logging

from flask import Flask, Response, abort, jsonify, render_template, request
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError

log = logging.getLogger(__name__)


class BadParam(BadRequest):
    """A query parameter the client got wrong; the description says which and what is accepted."""


def wants_json() -> bool:
    if request.path.startswith(("/api/", "/health", "/metrics")):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    if wants_json():
        resp = jsonify(success=False, error=message)
    else:
        resp = Response(render_template("error.html", status=status, message=message), mimetype="text/html")
    resp.status_code = status
    resp.headers.update(headers or {})
    return resp


def install(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        if isinstance(exc, BadParam):
            message = exc.description or "bad request"
        else:
            message = {404: "not found", 405: "method not allowed",
                       413: "request too large"}.get(exc.code or 500, exc.name.lower())
        resp = error_response(exc.code or 500, message)
        if exc.code == 405 and exc.valid_methods:
            resp.headers["Allow"] = ", ".join(exc.valid_methods)
        return resp

    @app.errorhandler(InternalServerError)
    def server_error(exc: InternalServerError) -> Response:
        # Flask has already logged the traceback (with the route); the client gets one line.
        return error_response(500, "internal error; see logs/web.log")

    @app.before_request
    def refuse_big_bodies() -> None:
        # MAX_CONTENT_LENGTH only bites when a view reads the body; these views mostly do not.
        limit = app.config.get("MAX_CONTENT_LENGTH")
        if limit and (request.content_length or 0) > limit:
            abort(413)

    @app.after_request
    def security_headers(resp: Response) -> Response:
        h = resp.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "no-referrer")
        h.setdefault("Content-Security-Policy",
                     "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                     "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
        if not request.path.startswith("/static/"):
            h.setdefault("Cache-Control", "no-store")
        return resp
