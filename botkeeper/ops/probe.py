"""`python -m botkeeper probe [--live]`: exit 0 when the page answers 200 on /health (or /live).

For Docker's HEALTHCHECK and Kubernetes exec probes in images without curl. Stdlib only, so a
probe every few seconds costs an interpreter start and no imports of Flask or requests.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

from ..config import EX_CONFIG, ConfigError, Settings


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m botkeeper probe", description=__doc__.splitlines()[0])
    ap.add_argument("--live", action="store_true", help="probe /live (can the bundle still recover?) instead")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    args = ap.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"botkeeper: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    host = f"[{host}]" if ":" in host else host
    url = f"http://{host}:{settings.port}/{'live' if args.live else 'health'}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            code = resp.status
    except urllib.error.HTTPError as exc:
        code = exc.code
    except (OSError, ValueError) as exc:
        print(f"botkeeper probe: {url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    if code != 200:
        print(f"botkeeper probe: {url} answered {code}", file=sys.stderr)
        return 1
    return 0
