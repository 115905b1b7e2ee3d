#!/usr/bin/env bash
# A CI job step: run a guest under a checked-in policy, drive it with a client, and fail the
# job if the guest tried anything the policy does not grant.
#
#   docs/examples/ci-job.sh UPSTREAM [POLICY]
#
# UPSTREAM is where the proxy guest forwards clients (ip:port). POLICY defaults to
# ci-policy.toml beside this script. SOCKBOX names the binary (default: sockbox on PATH).
set -euo pipefail

upstream=${1:?usage: ci-job.sh UPSTREAM [POLICY]}
policy=${2:-$(dirname "$0")/ci-policy.toml}
sockbox=${SOCKBOX:-sockbox}
work=$(mktemp -d)

"$sockbox" run proxy --policy "$policy" --audit "$work/audit.jsonl" --fail-on-denial \
    -- "$upstream" > "$work/stdout" &
guest=$!

# The ready line carries the real port; nothing to guess, no sleep-and-hope.
for _ in $(seq 200); do
    grep -q '^ready tcp ' "$work/stdout" && break
    kill -0 "$guest" 2> /dev/null || break
    sleep 0.05
done
addr=$(awk '/^ready tcp / { print $3; exit }' "$work/stdout")
[ -n "$addr" ] || { echo "the guest never got ready" >&2; wait "$guest"; exit 1; }

# The test traffic. A refused upstream closes the client; the verdict comes from sockbox.
echo "ping" | "$sockbox" client tcp "$addr" > "$work/reply" || true

kill -TERM "$guest"
status=0
wait "$guest" || status=$?
if [ "$status" -ne 0 ]; then
    echo "the guest overreached or failed (exit $status); denied operations:" >&2
    grep '"decision":"deny"' "$work/audit.jsonl" >&2 || true
fi
exit "$status"
