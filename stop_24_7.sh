#!/usr/bin/env bash
# Stop every process of the botkeeper bundle in this directory (found by our PID files, not by name).
set -u
cd "$(dirname "$0")"
. deploy/python.sh
bk_pick_python || exit 1
exec "$py" -m botkeeper stop "$@"
