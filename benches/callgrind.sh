#!/usr/bin/env bash
# Instructions the server executes per HTTP request during one load-generator phase, counted
# by valgrind's callgrind. Counts repeat to a fraction of a percent on a machine whose timings
# drift by tens of percent, so they show a change in CPU per request that timings cannot.
#
#   benches/callgrind.sh [STATUS|LIFE|CREATE] [SECONDS] [CLIENTS]
#
# TASKLEDGER_BIN=<binary> measures that binary instead of this tree's release build (an
# earlier commit's, say, for a before-and-after in one sitting).
#
# The server runs on a fresh data directory under callgrind (about 50 times slower), with
# instrumentation on only while the phase runs; the request count comes from its /metrics.
# The profile is kept for `callgrind_annotate` (its path is printed). Caveat: callgrind's
# CPU has no SHA extensions, so SHA-256 (Hawk, the log's hash chain) weighs several times
# more here than on a machine that has them.
set -euo pipefail
cd "$(dirname "$0")/.."
phase=${1:-STATUS}
secs=${2:-10}
clients=${3:-8}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/taskledger/target}"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }

bin=${TASKLEDGER_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --bin taskledger
  bin="$CARGO_TARGET_DIR/release/taskledger"
fi
# LOADGEN_BIN=<binary>: a load generator already built (e.g. with the test features, so the
# shared target directory is not rebuilt without them)
loadgen=${LOADGEN_BIN:-$(cargo bench --bench loadgen --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d /tmp/taskledger-callgrind.XXXXXX)
out="$dir/callgrind.out"
# the root token the load generator signs with against a server it did not start
token=loadgen-root-access-token-0123456789abcdefgh

TASKLEDGER_ROOT_ACCESS_TOKEN=$token valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$out" "$bin" serve \
  --listen "127.0.0.1:$port" --data-dir "$dir/data" >"$dir/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$port/api/queue/v1/ping" >/dev/null && break
  sleep 0.2
done
requests() {
  curl -sf "http://127.0.0.1:$port/metrics" |
    sed -n 's/^taskledger_http_request_seconds_count \([0-9]*\)$/\1/p'
}
before=$(requests)
callgrind_control -i on "$server" >/dev/null 2>&1
env "LOADGEN_ONLY_$phase=1" LOADGEN_SECS="$secs" LOADGEN_CLIENTS="$clients" \
  LOADGEN_PORT="$port" "$loadgen" | tail -1
callgrind_control -i off "$server" >/dev/null 2>&1
after=$(requests)
kill "$server"
wait "$server" || true
trap - EXIT
# the two /metrics reads are outside the instrumented window, but the first one counts
n=$((after - before - 1))
total=$(callgrind_annotate "$out" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
echo "callgrind, $phase: $n requests, $total instructions, $((total / n)) per request"
echo "profile: $out (callgrind_annotate --inclusive=yes $out)"
