#!/usr/bin/env bash
# Stop every process of the botkeeper bundle in this directory (found by our PID files, not by name).
set -u
cd "$(dirname "$0")"
exec "${BOTKEEPER_PYTHON:-python3}" -m botkeeper stop "$@"
