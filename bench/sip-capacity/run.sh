#!/usr/bin/env bash
# SIP capacity: SIPp short calls (INVITE/200/ACK, hold, BYE) against the
# demo number +15555550100, ramping the rate; prints the highest calls per
# second with 0 failed calls and ~0 retransmissions, and the most concurrent
# held calls at 0 failures. PostgreSQL writes a call_logs row per call.
#
#   bench/sip-capacity/run.sh            # `switchboard serve` if it answers SIP, else the harness
#   bench/sip-capacity/run.sh --serve    # target/release/switchboard serve on 127.0.0.1:$SIP_PORT
#   bench/sip-capacity/run.sh --harness  # SipServer alone (tests/sip_bench_node.rs), stand-in runtime
#
# Env: RATES="50 100 ..." HOLDS="500 1000 ..." CALL_SECONDS=5 HOLD_MS=1000.
# Output: one JSON line per step on stdout, then a summary line.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
MODE=${1:---auto}
RATES=${RATES:-"50 100 200 300 400 500 600 800 1000 1200 1500"}
HOLDS=${HOLDS:-"500 1000 2000 3000 4000 4900"}
CALL_SECONDS=${CALL_SECONDS:-5}
HOLD_MS=${HOLD_MS:-1000}
SIP_PORT=${SIP_PORT:-15060}
WORK=$(mktemp -d)
NODE_PID=""
cleanup() {
    touch "$WORK/stop"
    if [ -n "$NODE_PID" ]; then kill "$NODE_PID" 2>/dev/null || true; wait "$NODE_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

. "$ROOT/bench/sip-capacity/lib.sh"

start_harness() {
    # Build once, then run the test binary itself (no rebuild races).
    local exe
    exe=$(cargo test --test suite --no-run 2>&1 | sed -n 's/.*Executable.*(\(.*\))$/\1/p' | tail -1)
    [ -x "$exe" ] || { echo "could not build tests/sip_bench_node.rs" >&2; return 1; }
    SIP_BENCH_ADDR_FILE="$WORK/addr" SIP_BENCH_STOP_FILE="$WORK/stop" \
        "$exe" --ignored --nocapture --exact sip_bench_node::bench_node >"$WORK/node.log" 2>&1 &
    NODE_PID=$!
    for _ in $(seq 1 300); do [ -s "$WORK/addr" ] && break; sleep 0.2; done
    [ -s "$WORK/addr" ] || return 1
    TARGET=$(cat "$WORK/addr")
    for _ in $(seq 1 50); do options_ok "$TARGET" && return 0; sleep 0.2; done
    return 1
}

case "$MODE" in
    --serve) start_serve || { echo "switchboard serve does not answer SIP" >&2; exit 1; }; KIND=serve ;;
    --harness) start_harness || { echo "harness did not start" >&2; cat "$WORK/node.log" >&2; exit 1; }; KIND=harness ;;
    *) if start_serve 2>/dev/null; then KIND=serve; else
           [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null; NODE_PID=""
           start_harness || { echo "harness did not start" >&2; exit 1; }; KIND=harness; fi ;;
esac
echo "target $TARGET ($KIND)" >&2

best_cps=0
for rate in $RATES; do
    calls=$((rate * CALL_SECONDS))
    read -r ok failed retrans peak p50 p99 pmax < <(run_step "$rate" "$calls" "$HOLD_MS" 100000)
    echo "{\"bench\":\"sip_cps\",\"target\":\"$KIND\",\"rate\":$rate,\"calls\":$calls,\"successful\":$ok,\"failed\":$failed,\"retransmissions\":$retrans,\"peak_concurrent\":$peak,\"invite_to_200_ms\":{\"p50\":$p50,\"p99\":$p99,\"max\":$pmax}}"
    # ~0 retransmissions: at most one per thousand calls.
    if [ "$failed" -eq 0 ] && [ "$ok" -eq "$calls" ] && [ "$retrans" -le $((calls / 1000)) ]; then
        best_cps=$rate
    else
        break
    fi
done

best_hold=0
for n in $HOLDS; do
    # Ramp at a rate the node handles cleanly, hold every call past the ramp.
    rate=$(( best_cps > 200 ? 200 : (best_cps > 0 ? best_cps : 50) ))
    hold=$(( n * 1000 / rate + 5000 ))
    read -r ok failed retrans peak _ < <(run_step "$rate" "$n" "$hold" "$n")
    echo "{\"bench\":\"sip_held\",\"target\":\"$KIND\",\"calls\":$n,\"successful\":$ok,\"failed\":$failed,\"retransmissions\":$retrans,\"peak_concurrent\":$peak}"
    if [ "$failed" -eq 0 ] && [ "$ok" -eq "$n" ] && [ "$peak" -ge "$n" ]; then best_hold=$n; else break; fi
done

echo "{\"bench\":\"sip_capacity_summary\",\"target\":\"$KIND\",\"max_cps_zero_failures\":$best_cps,\"max_concurrent_held\":$best_hold,\"reference_cps\":{\"rsipstack\":1500,\"siphon-rs\":1000}}"
