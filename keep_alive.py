"""The status page and health API (the `web` component): waitress on HOST:PORT.

Run by the supervisor; `python keep_alive.py` also works on its own.
"""

from botkeeper import logs
from botkeeper.config import load_or_exit


def main() -> int:
    settings = load_or_exit()
    logs.setup(settings, "web")
    from botkeeper.web.server import serve

    return serve(settings)


if __name__ == "__main__":
    raise SystemExit(main())
