#!/usr/bin/env bash
# The project's tests: `bash run_tests.sh [pytest arguments]`. The same Python as start_24_7.sh
# (the active virtual environment, else .venv here), with requirements-dev.txt installed once.
set -u
cd "$(dirname "$0")"
. deploy/python.sh
bk_pick_python create || exit 1
bk_install requirements-dev.txt "$BK_RUNTIME_MODULES pytest pytest_timeout hypothesis playwright yaml kubernetes_validate wheel" || exit 1
exec "$py" -m pytest -q "$@"
