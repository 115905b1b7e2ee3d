#!/usr/bin/env bash
# One active client against the 0.3 echo with IDLE other clients held open (the "Per-round-trip
# cost" section of docs/design/wasi-p3.md): round trips/s from `p3-load rr 1`, the server's CPU
# time and context switches per round trip (`perf stat`), and with PERF=1 a `perf record -g`
# of the server during the run (user space only; perf_event_paranoid 2 hides the kernel).
# SERVER: native | runner (default); RUNNER: the binary (default target/release/p3-runner).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/target/release
guest=${GUEST:-$root/guests/p3-echo/target/wasm32-wasip2/release/p3_echo.wasm}
idle=${IDLE:-0}
secs=${SECS:-5}
out=${OUT:-/tmp/p3-profile}
mkdir -p "$out"

log=$(mktemp)
case ${SERVER:-runner} in
  native) "$bin/p3-load" native >"$log" 2>/dev/null & ;;
  runner) "${RUNNER:-$bin/p3-runner}" "$guest" 127.0.0.1:0 >"$log" 2>/dev/null & ;;
esac
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 200); do
  addr=$(sed -n 's/^listening //p' "$log" | head -1)
  [ -n "$addr" ] && break
  sleep 0.05
done
[ -n "$addr" ] || { echo "server did not start" >&2; exit 1; }

if [ "$idle" -gt 0 ]; then
  "$bin/p3-load" open "$addr" "$idle" $((secs + 30)) &
  holder=$!
  # Wait until all idle clients are open (the holder prints when they are).
  sleep 1
  while [ "$(ss -Htn state established "( dport = :${addr##*:} )" | wc -l)" -lt "$idle" ]; do
    sleep 0.2
  done
fi

if [ "${PERF:-0}" = 1 ]; then
  perf record -q -F 4999 -g -o "$out/perf.data" -p "$pid" -- sleep "$secs" 2>/dev/null &
else
  perf stat -x, -e task-clock,context-switches,cpu-migrations -p "$pid" -- sleep "$secs" \
    2>"$out/stat.csv" &
fi
recorder=$!
"$bin/p3-load" rr "$addr" 1 "$secs"
wait $recorder || true
[ "${PERF:-0}" = 1 ] || cat "$out/stat.csv"
[ "$idle" -gt 0 ] && kill "$holder" 2>/dev/null
exit 0
