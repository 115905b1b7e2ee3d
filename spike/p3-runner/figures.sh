#!/usr/bin/env bash
# The issue 16 spike figures (docs/design/wasi-p3.md): native vs the WASI 0.3 echo on stock
# wasmtime 50.0.1 vs on the round-robin patch, interleaved, ROUNDS rounds, each run < 1 min.
# Needs: target/release/p3-runner-stock and -fair (from build-fair.sh),
# target/release/p3-load, and the guest built in guests/p3-echo.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/target/release
guest=${GUEST:-$root/target/guests/wasm32-wasip2/release/p3_echo.wasm}
rounds=${ROUNDS:-3}
secs=${SECS:-5}

# start <server...>: runs the server, waits for its `listening <addr>` line, sets $addr/$pid.
start() {
  local out; out=$(mktemp)
  "$@" >"$out" 2>/dev/null &
  pid=$!
  for _ in $(seq 200); do
    addr=$(sed -n 's/^listening //p' "$out" | head -1)
    [ -n "$addr" ] && break
    sleep 0.05
  done
  rm -f "$out"
  [ -n "$addr" ] || { echo "server did not start: $*" >&2; kill "$pid"; exit 1; }
}

stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }

server() {
  case $1 in
    native) start "$bin/p3-load" native ;;
    stock|fair) start "$bin/p3-runner-$1" "$guest" 127.0.0.1:0 ;;
  esac
}

for round in $(seq "$rounds"); do
  for kind in native stock fair; do
    for n in ${OPEN:-1000 4000}; do
      server "$kind"; echo "round $round $kind $("$bin/p3-load" open "$addr" "$n")"; stop
    done
    for c in ${CLIENTS:-64}; do
      server "$kind"; echo "round $round $kind $("$bin/p3-load" rr "$addr" "$c" "$secs")"; stop
    done
  done
done
