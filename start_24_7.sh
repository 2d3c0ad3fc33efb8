#!/usr/bin/env bash
# Start the whole botkeeper bundle: stops an earlier copy in this directory first, starts the
# supervisor (kept alive by run_24_7.sh) and auto_recovery.py, then streams the combined log.
#   bash start_24_7.sh            stay in the foreground (Replit Run button, Reserved VM); Ctrl+C stops all
#   bash start_24_7.sh --detach   return once everything is healthy (exit 1 if it is not within START_TIMEOUT)
set -u
cd "$(dirname "$0")"
py="${BOTKEEPER_PYTHON:-python3}"
if ! "$py" -c "import telegram, flask, waitress, psutil" 2>/dev/null; then
  echo "botkeeper: dependencies are missing. Install them first:  pip install -r requirements.txt" >&2
  exit 1
fi
exec "$py" -m botkeeper start "$@"
