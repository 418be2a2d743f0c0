#!/usr/bin/env bash
# `make fuzz-api`: Schemathesis (PyPI) against /openapi.json of a running
# `switchboard serve`, authenticated as a workspace OWNER, for a bounded
# number of examples per operation. Fails on any 5xx.
#
#   bench/api/fuzz-api.sh                 # 25 examples per operation
#   FUZZ_EXAMPLES=100 bench/api/fuzz-api.sh
#   SWITCHBOARD_BIN=target/release/switchboard bench/api/fuzz-api.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/api/lib.sh

EXAMPLES=${FUZZ_EXAMPLES:-25}
VENV=data/venv-schemathesis
if [ ! -x "$VENV/bin/st" ]; then
    echo "installing schemathesis into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q schemathesis
fi
if [ -z "${SWITCHBOARD_BIN:-}" ]; then
    cargo build --bin switchboard
    SWITCHBOARD_BIN=target/debug/switchboard
fi

start_server "$SWITCHBOARD_BIN" "${FUZZ_API_PORT:-18181}" "${FUZZ_SIP_PORT:-15181}"
make_fixture
export SB_WORKSPACE_ID=$WORKSPACE SB_TOKEN=$TOKEN

# Path ids: the fixture's workspace, so requests get past the tenancy check
# and reach validation and SQL. Deleting that workspace, or (in the stateful
# phase: sign up, add as OWNER, demote us) changing its members, would lock
# the run out early, so those operations are left out.
CONFIG=$(mktemp /tmp/schemathesis-XXXX.toml)
cat >"$CONFIG" <<TOML
[parameters]
"path.workspace_id" = "\${SB_WORKSPACE_ID}"
TOML

set +e
"$VENV/bin/st" --config-file "$CONFIG" run "$BASE/openapi.json" \
    --checks not_a_server_error \
    --max-examples "$EXAMPLES" \
    --header "Authorization: Bearer $SB_TOKEN" \
    --exclude-operation-id delete_v1_workspaces_workspace_id \
    --exclude-operation-id patch_v1_workspaces_workspace_id_members_user_id \
    --exclude-operation-id delete_v1_workspaces_workspace_id_members_user_id \
    --request-timeout 20 \
    --workers 2 \
    --seed "${FUZZ_SEED:-1}" \
    --suppress-health-check all \
    --report junit --report-dir data/schemathesis-report
status=$?
set -e
rm -f "$CONFIG"
if grep -q " 5[0-9][0-9] " "$LOG" 2>/dev/null; then
    echo "server log mentions 5xx responses:" >&2
    grep " 5[0-9][0-9] " "$LOG" | head -20 >&2
fi
exit $status
