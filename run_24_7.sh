#!/usr/bin/env bash
# Keeps the botkeeper supervisor alive: restarts it with backoff whenever it exits, forwards
# SIGTERM/SIGINT to it, and exits when asked to stop. One runner per bundle (flock on run/runner.lock).
set -u
umask 077  # the bundle's files are private (logs hold user messages; run/*.lock must be ours alone)
cd "$(dirname "$0")"
home="${BOTKEEPER_HOME:-$PWD}"
run="$home/run"
py="${BOTKEEPER_PYTHON:-python3}"
mkdir -p "$run" "$home/logs"

exec 9>"$run/runner.lock"
if ! flock -n 9; then
  echo "run_24_7.sh: another runner already keeps the supervisor of $home alive"
  exit 0
fi
echo $$ > "$run/runner.pid"

# Waits without a child process: a child (sleep, a blocking flock) would outlive a SIGKILLed runner
# as an orphan. `read -t` on a pipe only our traps write to is bash's own sleep; a signal's trap
# writes a byte, so the pause ends at once.
exec 8<> <(:)
pause() { read -r -t "$1" -u 8 || :; }

stopping=0
child=""
trap 'stopping=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null; echo >&8' TERM INT
# SIGHUP: the foreground start that launched us died (PR_SET_PDEATHSIG): the whole bundle stops.
trap 'touch "$run/stopping"; stopping=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null; echo >&8' HUP
delay_ms=500
say() { echo "$(date '+%F %T') run_24_7.sh: $*"; }

while [ "$stopping" = 0 ] && [ ! -e "$run/stopping" ]; do
  # An older supervisor may still own the directory (its runner was killed): wait for its lock, so
  # that we never start a supervisor that can only exit 75. One quick probe every half second.
  until flock -n "$run/supervisor.lock" true 9>&- 8>&-; do
    [ "$stopping" = 1 ] || [ -e "$run/stopping" ] && break
    pause 0.5
  done
  [ "$stopping" = 1 ] || [ -e "$run/stopping" ] && break
  started=$SECONDS
  "$py" -m botkeeper supervise 9>&- 8>&- &   # the supervisor must not hold our lock (nor our pause pipe)
  child=$!
  wait "$child"; code=$?
  while kill -0 "$child" 2>/dev/null; do wait "$child"; code=$?; done  # a trapped signal ends wait early
  child=""
  [ "$stopping" = 1 ] && break
  case $code in
    0) [ -e "$run/stopping" ] && break ;;
    78) say "the supervisor reports a configuration error (see above); not restarting"; exit 78 ;;
    75) continue ;;   # another supervisor took the lock first: wait for it at the top of the loop
  esac
  [ $((SECONDS - started)) -ge 10 ] && delay_ms=500
  say "supervisor exited with code $code; restarting in $((delay_ms / 1000)).$((delay_ms % 1000 / 100)) s"
  pause "$((delay_ms / 1000)).$(printf '%03d' $((delay_ms % 1000)))"
  delay_ms=$((delay_ms * 2)); [ $delay_ms -gt 30000 ] && delay_ms=30000
done
rm -f "$run/runner.pid"
exit 0
