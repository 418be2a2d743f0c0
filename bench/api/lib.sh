# Shared by fuzz-api.sh and run.sh: a throw-away database on the project's
# PostgreSQL, `switchboard serve` on loopback ports, and a fixture (user,
# token, workspace, OWNER API key, agent) created through the API itself.
# shellcheck shell=bash

ADMIN_URL=${SWITCHBOARD_TEST_DATABASE_URL:-${DATABASE_URL:-postgres://postgres@127.0.0.1:54329/postgres}}
SERVER_PID=""
DB_NAME=""

die() { echo "error: $*" >&2; exit 1; }

admin_psql() { psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -qAt "$@"; }
db_url() { echo "${ADMIN_URL%/*}/$DB_NAME"; }
db_psql() { psql "$(db_url)" -v ON_ERROR_STOP=1 -qAt "$@"; }

# start_server BIN API_PORT SIP_PORT
start_server() {
    local bin=$1 api_port=$2 sip_port=$3
    [ -x "$bin" ] || die "$bin is not built"
    command -v psql >/dev/null || die "psql is required (scripts/setup installs PostgreSQL)"
    admin_psql -c "select 1" >/dev/null || die "PostgreSQL is not reachable at $ADMIN_URL (run scripts/setup)"
    DB_NAME="sbbench_$$_$(date +%s)"
    admin_psql -c "create database $DB_NAME" >/dev/null
    LOG=$(mktemp /tmp/switchboard-api-XXXX.log)
    DATABASE_URL=$(db_url) \
    SWITCHBOARD_API__LISTEN=127.0.0.1:$api_port \
    SWITCHBOARD_SIP__LISTEN=127.0.0.1:$sip_port \
    SWITCHBOARD_RTP__PORT_MIN=41000 SWITCHBOARD_RTP__PORT_MAX=41100 \
    SWITCHBOARD_LOG__LEVEL=${SWITCHBOARD_LOG__LEVEL:-warn} \
        "$bin" serve >"$LOG" 2>&1 &
    SERVER_PID=$!
    trap stop_server EXIT
    BASE="http://127.0.0.1:$api_port"
    for _ in $(seq 1 120); do
        if curl -fsS "$BASE/readyz" >/dev/null 2>&1; then return 0; fi
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$LOG" >&2; die "switchboard serve exited"; }
        sleep 0.5
    done
    cat "$LOG" >&2
    die "switchboard serve did not become ready in 60 s"
}

stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
    if [ -n "$DB_NAME" ]; then
        admin_psql -c "drop database if exists $DB_NAME with (force)" >/dev/null 2>&1 || true
        DB_NAME=""
    fi
}

# api METHOD PATH [JSON] — prints the body; fails on a non-2xx status.
api() {
    local method=$1 path=$2 body=${3:-}
    local args=(-fsS -X "$method" "$BASE$path" -H "content-type: application/json")
    [ -n "${TOKEN:-}" ] && args+=(-H "authorization: Bearer $TOKEN")
    [ -n "$body" ] && args+=(--data "$body")
    curl "${args[@]}"
}

json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }

# Sets TOKEN, WORKSPACE, API_KEY, AGENT.
make_fixture() {
    TOKEN=""
    api POST /v1/auth/signup '{"email":"bench@example.com","password":"bench-password-1"}' >/dev/null
    TOKEN=$(api POST /v1/auth/token '{"email":"bench@example.com","password":"bench-password-1"}' | json_field access_token)
    WORKSPACE=$(api POST /v1/workspaces '{"name":"Bench"}' | json_field id)
    API_KEY=$(api POST "/v1/workspaces/$WORKSPACE/api-keys" '{"name":"bench","role":"OWNER"}' | json_field key)
    AGENT=$(api POST "/v1/workspaces/$WORKSPACE/agents" '{"name":"Bench agent","status":"live","instructions":"Answer briefly."}' | json_field id)
    api POST "/v1/workspaces/$WORKSPACE/phone-numbers" "{\"e164\":\"+15555550100\",\"agent_id\":\"$AGENT\"}" >/dev/null
}
