# Sourced by start_24_7.sh, stop_24_7.sh and run_tests.sh (from the project directory): which
# Python runs botkeeper, and its packages. Sets $py.
#   BOTKEEPER_PYTHON when set (start passes its own interpreter to run_24_7.sh);
#   python3 itself inside a virtual environment, on Replit, or when it already has the packages
#   (the Docker image);
#   else the project's own .venv, created on first use: the python3 of Debian 12 / Ubuntu 24.04
#   refuses `pip install` outside a virtual environment (PEP 668, "externally-managed-environment").

# Every module of requirements.txt (apprise and redis too: ALERT_URLS and REDIS_URL work out of the box).
BK_RUNTIME_MODULES="telegram flask waitress psutil requests schedule prometheus_client dotenv pythonjsonlogger redis apprise"

# bk_has PYTHON "MODULE ...": every module is installed for PYTHON (found, not imported: fast).
bk_has() {
  "$1" -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1].split()))' "$2" 2>/dev/null
}

bk_in_venv() { "$1" -c 'import sys; raise SystemExit(sys.prefix == sys.base_prefix)' 2>/dev/null; }

# bk_pick_python [create]: sets $py; with "create", makes .venv when it is the one to use.
bk_pick_python() {
  if [ -n "${BOTKEEPER_PYTHON:-}" ]; then py=$BOTKEEPER_PYTHON; return 0; fi
  py=python3
  if ! command -v python3 >/dev/null 2>&1; then
    echo "botkeeper: python3 is not installed (Debian/Ubuntu: sudo apt install python3 python3-venv)" >&2
    return 1
  fi
  if [ -n "${REPL_ID:-}" ] || bk_in_venv python3; then return 0; fi
  if [ -x .venv/bin/python ]; then py="$PWD/.venv/bin/python"; return 0; fi
  if bk_has python3 "$BK_RUNTIME_MODULES"; then return 0; fi
  [ "${1:-}" = create ] || return 0
  echo "botkeeper: creating a virtual environment in .venv (python3 is not in one) ..."
  if ! python3 -m venv .venv >/dev/null 2>&1 || [ ! -x .venv/bin/python ]; then
    rm -rf .venv
    echo "botkeeper: python3 cannot create a virtual environment: install the python3-venv package" \
         "(Debian/Ubuntu: sudo apt install python3-venv), then run this again" >&2
    return 1
  fi
  py="$PWD/.venv/bin/python"
}

# bk_install REQUIREMENTS MODULES: pip install into $py when a module is missing or, in our own .venv, when
# the requirement files changed since the last install (a `git pull` that added a package); else nothing.
bk_install() {
  local stamp="" sum=""
  if [ "$py" = "$PWD/.venv/bin/python" ]; then
    stamp=".venv/.botkeeper-$1.sum"
    sum=$(cat requirements*.txt | cksum)
  fi
  if bk_has "$py" "$2" && { [ -z "$stamp" ] || [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; }; then
    return 0
  fi
  echo "botkeeper: installing $1 with $py ..."
  if "$py" -m pip install -q -r "$1" && bk_has "$py" "$2"; then
    [ -z "$stamp" ] || echo "$sum" > "$stamp"
    return 0
  fi
  echo "botkeeper: the packages of $1 are missing and could not be installed. Run:  $py -m pip install -r $1" >&2
  return 1
}
