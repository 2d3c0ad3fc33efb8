#!/usr/bin/env bash
# Start the whole botkeeper bundle: stops an earlier copy in this directory first, starts the
# supervisor (kept alive by run_24_7.sh) and auto_recovery.py, then streams the combined log.
#   bash start_24_7.sh            stay in the foreground (Replit Run button, Reserved VM); Ctrl+C stops all
#   bash start_24_7.sh --detach   return once everything is healthy (exit 1 if not within START_TIMEOUT)
# Outside a virtual environment it creates and uses .venv here (deploy/python.sh says which Python).
set -u
cd "$(dirname "$0")"
. deploy/python.sh
bk_pick_python create || exit 1
bk_install requirements.txt "$BK_RUNTIME_MODULES" || exit 1
exec "$py" -m botkeeper start "$@"
