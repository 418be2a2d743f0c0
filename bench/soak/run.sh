#!/usr/bin/env bash
# Soak and overload: the release node (`switchboard serve`, full runtime) on
# the demo number, SIPp short calls at a steady rate for a long time, the
# node's memory sampled as it goes; then an overload burst, and the memory
# 60 s after each. Writes bench/results/soak.json and prints it.
#
#   bench/soak/run.sh                     # 10 minutes at 240 calls/s (80 % of a 300 calls/s knee)
#   RATE=160 SOAK_SECONDS=120 bench/soak/run.sh
#
# Env: RATE, SOAK_SECONDS=600, HOLD_MS=1000, SAMPLE_SECONDS=10,
#      OVERLOAD_RATE=1200, OVERLOAD_SECONDS=10, REST_SECONDS=60, SIP_PORT=15060.
# Memory is /proc/<pid>/status: RssAnon is the process's own memory; RssFile
# is mapped files (the model weights, shared page cache).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
RATE=${RATE:-240}
SOAK_SECONDS=${SOAK_SECONDS:-600}
HOLD_MS=${HOLD_MS:-1000}
SAMPLE_SECONDS=${SAMPLE_SECONDS:-10}
OVERLOAD_RATE=${OVERLOAD_RATE:-1200}
OVERLOAD_SECONDS=${OVERLOAD_SECONDS:-10}
REST_SECONDS=${REST_SECONDS:-60}
SIP_PORT=${SIP_PORT:-15060}
OUT=${OUT:-bench/results/soak.json}
WORK=$(mktemp -d)
NODE_PID=""
SAMPLER_PID=""
cleanup() {
    [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null || true
    if [ -n "$NODE_PID" ]; then kill "$NODE_PID" 2>/dev/null || true; wait "$NODE_PID" 2>/dev/null || true; fi
    cp "$WORK/node.log" /tmp/switchboard-soak-node.log 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
. "$ROOT/bench/sip-capacity/lib.sh"

start_serve || { echo "switchboard serve does not answer SIP" >&2; cat "$WORK/node.log" >&2; exit 1; }
echo "node $NODE_PID on $TARGET" >&2
# At rest as after the load: the same REST_SECONDS without a call (the
# recognizer lets go of its idle decoding state after 30 s).
sleep "$REST_SECONDS"
read -r rest_rss rest_anon rest_file < <(memory_kb "$NODE_PID")
echo "at rest: rss $rest_rss kB, anon $rest_anon kB, file $rest_file kB" >&2

# One sample line per SAMPLE_SECONDS: "seconds phase rss anon file".
echo soak >"$WORK/phase"
(
    start=$(date +%s)
    while kill -0 "$NODE_PID" 2>/dev/null; do
        echo "$(( $(date +%s) - start )) $(cat "$WORK/phase") $(memory_kb "$NODE_PID")" >>"$WORK/samples"
        sleep "$SAMPLE_SECONDS"
    done
) &
SAMPLER_PID=$!

echo "soak: $RATE calls/s for $SOAK_SECONDS s, each held $HOLD_MS ms" >&2
read -r s_ok s_failed s_retrans s_peak s_p50 s_p99 s_max < <(run_step "$RATE" $((RATE * SOAK_SECONDS)) "$HOLD_MS" 100000)
echo rest-after-soak >"$WORK/phase"
sleep "$REST_SECONDS"
read -r soak_rest_rss soak_rest_anon _ < <(memory_kb "$NODE_PID")

echo "overload: $OVERLOAD_RATE calls/s for $OVERLOAD_SECONDS s" >&2
echo overload >"$WORK/phase"
read -r o_ok o_failed o_retrans o_peak o_p50 o_p99 o_max < <(run_step "$OVERLOAD_RATE" $((OVERLOAD_RATE * OVERLOAD_SECONDS)) "$HOLD_MS" 100000)
read -r o_top_rss o_top_anon _ < <(memory_kb "$NODE_PID")
echo rest-after-overload >"$WORK/phase"
sleep "$REST_SECONDS"
read -r o_rest_rss o_rest_anon _ < <(memory_kb "$NODE_PID")
kill "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""

python3 - "$WORK/samples" "$OUT" <<PY
import json, sys, datetime
null = None  # a step with no call has no INVITE -> 200 times
samples = [l.split() for l in open(sys.argv[1]) if l.strip()]
soak = [(int(s[0]), int(s[3])) for s in samples if s[1] == "soak"]
def slope(points):  # kB per minute, least squares over the second half of the soak
    pts = points[len(points) // 2:]
    if len(pts) < 2: return None
    n = len(pts); mx = sum(t for t, _ in pts) / n; my = sum(v for _, v in pts) / n
    den = sum((t - mx) ** 2 for t, _ in pts)
    return round(60 * sum((t - mx) * (v - my) for t, v in pts) / den) if den else None
mb = lambda kb: round(kb / 1024, 1)
rest_anon = $rest_anon
result = {
    "benchmark": "soak",
    "measured_at": datetime.datetime.utcnow().isoformat(timespec="seconds") + "Z",
    "node": "target/release/switchboard serve (full runtime, demo number, Enterprise plan)",
    "at_rest_mb": {"rss": mb($rest_rss), "anon": mb($rest_anon), "file": mb($rest_file)},
    "soak": {
        "rate": $RATE, "seconds": $SOAK_SECONDS, "hold_ms": $HOLD_MS,
        "calls": $RATE * $SOAK_SECONDS, "successful": $s_ok, "failed": $s_failed,
        "retransmissions": $s_retrans, "peak_concurrent": $s_peak,
        "invite_to_200_ms": {"p50": $s_p50, "p99": $s_p99, "max": $s_max},
        "anon_mb_first_sample": mb(soak[0][1]) if soak else None,
        "anon_mb_max": mb(max(v for _, v in soak)) if soak else None,
        "anon_mb_last_sample": mb(soak[-1][1]) if soak else None,
        "anon_kb_per_minute_second_half": slope(soak),
        "anon_mb_after_rest": mb($soak_rest_anon),
    },
    "overload": {
        "rate": $OVERLOAD_RATE, "seconds": $OVERLOAD_SECONDS,
        "calls": $OVERLOAD_RATE * $OVERLOAD_SECONDS, "successful": $o_ok, "failed": $o_failed,
        "retransmissions": $o_retrans, "peak_concurrent": $o_peak,
        "invite_to_200_ms": {"p50": $o_p50, "p99": $o_p99, "max": $o_max},
        "anon_mb_at_end": mb($o_top_anon),
        "anon_mb_after_rest": mb($o_rest_anon),
        "after_rest_vs_at_rest": round($o_rest_anon / rest_anon, 3),
    },
    "rest_seconds": $REST_SECONDS,
    "samples": [{"s": int(s[0]), "phase": s[1], "rss_mb": mb(int(s[2])), "anon_mb": mb(int(s[3]))} for s in samples],
}
json.dump(result, open(sys.argv[2], "w"), indent=1)
print(json.dumps({k: v for k, v in result.items() if k != "samples"}))
PY
