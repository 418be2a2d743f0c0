#!/usr/bin/env bash
# API benchmark: wrk against a release `switchboard serve` on loopback, with
# an OWNER API key (so every request verifies the key, opens the RLS
# transaction and runs its query): GET one agent by id, and a page of 50
# call logs out of 5,000. Prints req/s and p99 per case and writes
# bench/results/api.md (the latest run; bench/results/api-steps.md keeps the
# history of changes and their figures).
#
#   bench/api/run.sh            # 10 s per case, 2 threads, 16 connections
#   DURATION=30s CONNECTIONS=32 bench/api/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/api/lib.sh

command -v wrk >/dev/null || die "wrk is required (Debian package wrk)"
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-16}
if [ -z "${SWITCHBOARD_BIN:-}" ]; then
    cargo build --release --bin switchboard
    SWITCHBOARD_BIN=target/release/switchboard
fi

start_server "$SWITCHBOARD_BIN" "${BENCH_API_PORT:-18282}" "${BENCH_SIP_PORT:-15282}"
make_fixture
# 5,000 call logs written as the runtime writes them
db_psql -c "insert into call_logs (workspace_id, agent_id, direction, status, from_number, to_number, started_at, duration_ms)
            select '$WORKSPACE', '$AGENT', 'inbound', (array['completed','failed','no_answer'])[1 + i % 3],
                   '+1555555' || lpad((i % 10000)::text, 4, '0'), '+15555550100',
                   now() - (i || ' seconds')::interval, 1000 * (i % 600)
              from generate_series(1, 5000) i" >/dev/null
# Planner statistics as autovacuum would leave them on a table this size
# (right after a bulk insert the planner guesses the rows and may sort the
# whole workspace for a page).
db_psql -c "analyze call_logs" >/dev/null

run_case() {
    local name=$1 path=$2
    curl -fsS -H "authorization: Bearer $API_KEY" "$BASE$path" >/dev/null || die "$name: request fails"
    local out
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
        -H "authorization: Bearer $API_KEY" "$BASE$path")
    local rps p50 p99 non2xx
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    echo "api_bench case=$name req_per_s=$rps p50=$p50 p99=$p99 non_2xx=${non2xx:-0}"
    local shown=${path//$WORKSPACE/\{ws\}}
    shown=${shown//$AGENT/\{agent\}}
    RESULTS+=("| $name | \`GET $shown\` | $rps | $p50 | $p99 | ${non2xx:-0} |")
}

RESULTS=()
run_case agent_by_id "/v1/workspaces/$WORKSPACE/agents/$AGENT"
run_case call_logs_page "/v1/workspaces/$WORKSPACE/call-logs?limit=50"
run_case call_logs_filtered "/v1/workspaces/$WORKSPACE/call-logs?status=failed&agent_id=$AGENT&limit=50"

mkdir -p bench/results
{
    echo "# API benchmark"
    echo
    echo "\`bench/api/run.sh\` on $(date -u +%Y-%m-%d) — $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION,"
    echo "API key auth, release build; wrk, the server and PostgreSQL share the machine."
    echo
    echo "| case | request | req/s | p50 | p99 | non-2xx |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${RESULTS[@]}"
} > bench/results/api.md
cat bench/results/api.md
