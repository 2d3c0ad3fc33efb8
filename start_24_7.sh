#!/usr/bin/env bash
# Start the whole botkeeper bundle: stops an earlier copy in this directory first, starts the
# supervisor (kept alive by run_24_7.sh) and auto_recovery.py, then streams the combined log.
#   bash start_24_7.sh            stay in the foreground (Replit Run button, Reserved VM); Ctrl+C stops all
#   bash start_24_7.sh --detach   return once everything is healthy (exit 1 if not within START_TIMEOUT)
set -u
cd "$(dirname "$0")"
py="${BOTKEEPER_PYTHON:-python3}"
deps_ok() { "$py" -c "import telegram, flask, waitress, psutil, requests, schedule, prometheus_client, dotenv" 2>/dev/null; }
if ! deps_ok; then
  # Replit's Run button does not always install requirements.txt first: do it once here.
  echo "botkeeper: installing dependencies from requirements.txt ..."
  if ! "$py" -m pip install -q -r requirements.txt || ! deps_ok; then
    echo "botkeeper: dependencies are missing and could not be installed. Run:  pip install -r requirements.txt" >&2
    exit 1
  fi
fi
exec "$py" -m botkeeper start "$@"
