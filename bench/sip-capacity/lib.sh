# Shared by bench/sip-capacity/run.sh and bench/soak/run.sh: start the
# release node on the demo number, run one SIPp step, read a process's memory.
# Needs ROOT (the project root), WORK (a scratch directory) and SIP_PORT.

options_ok() { # $1 = host:port
    sipp "$1" -sf "$ROOT/tests/fixtures/sipp/uac_options.xml" -m 1 -timeout 3s -timeout_error -nostdin \
        -p $((40000 + RANDOM % 10000)) >/dev/null 2>&1
}

# Starts target/release/switchboard serve on 127.0.0.1:$SIP_PORT with the
# demo number on the plan without usage limits; sets NODE_PID and TARGET.
start_serve() {
    [ -x target/release/switchboard ] || cargo build --release >&2
    export SWITCHBOARD_SIP__LISTEN="127.0.0.1:$SIP_PORT" SWITCHBOARD_SIP__MAX_CALLS=6000
    ./target/release/switchboard migrate >&2
    ./target/release/switchboard seed-demo >&2
    # The trunk without a call cap, the number's workspace on the plan
    # without usage limits (the default plan's 100 conversations a month
    # would answer 480 after the first hundred calls).
    psql "${DATABASE_URL:-postgres://postgres@127.0.0.1:54329/switchboard}" -q >&2 <<'SQL'
update sip_trunks set max_concurrent_calls = 100000 where name = 'local';
insert into workspace_subscriptions (workspace_id, plan_id)
select n.workspace_id, p.id from phone_numbers n, pricing_plans p
where n.e164 = '+15555550100' and p.name = 'Enterprise'
  and not exists (select 1 from workspace_subscriptions s where s.workspace_id = n.workspace_id
                  and s.status in ('trialing', 'active', 'past_due'));
update workspace_subscriptions s set plan_id = p.id from phone_numbers n, pricing_plans p
where n.e164 = '+15555550100' and p.name = 'Enterprise' and s.workspace_id = n.workspace_id
  and s.status in ('trialing', 'active', 'past_due');
SQL
    ./target/release/switchboard serve >"$WORK/node.log" 2>&1 &
    NODE_PID=$!
    TARGET="127.0.0.1:$SIP_PORT"
    for _ in $(seq 1 100); do options_ok "$TARGET" && return 0; sleep 0.2; done
    return 1
}

# Runs one SIPp load step of short calls; prints "successful failed
# retransmissions peak_calls invite_to_200_p50_ms invite_to_200_p99_ms
# invite_to_200_max_ms" (every call's INVITE -> 200 from SIPp's -trace_rtt).
run_step() { # $1 = rate, $2 = calls, $3 = hold ms, $4 = call limit
    local dir="$WORK/step$RANDOM"; mkdir -p "$dir"
    local budget=$(( $2 / ($1 > 0 ? $1 : 1) + 300 ))
    (cd "$dir" && timeout "$budget" sipp "$TARGET" -sf "$ROOT/tests/fixtures/sipp/uac_short.xml" -s +15555550100 \
        -r "$1" -m "$2" -d "$3" -l "$4" -timeout "$((budget - 60))s" -nostdin -p $((40000 + RANDOM % 10000)) \
        -trace_stat -stf stat.csv -fd 1 -trace_rtt -rtt_freq 1 >/dev/null 2>&1) || true
    python3 - "$dir/stat.csv" "$dir" <<'PY'
import csv, glob, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
head, last = rows[0], rows[-1]
col = lambda name: int(last[head.index(name)])
peak = max(int(r[head.index("CurrentCall")]) for r in rows[1:])
rtt = []
for path in glob.glob(sys.argv[2] + "/*_rtt.csv"):
    for r in list(csv.reader(open(path), delimiter=";"))[1:]:
        try:
            rtt.append(float(r[1]))
        except (IndexError, ValueError):
            pass
rtt.sort()
pct = lambda p: f"{rtt[min(len(rtt) - 1, int(p / 100 * len(rtt)))]:.0f}" if rtt else "null"
print(col("SuccessfulCall(C)"), col("FailedCall(C)"), col("Retransmissions(C)"), peak, pct(50), pct(99), pct(100))
PY
}

# "rss_kb rss_anon_kb rss_file_kb" of a process (/proc/<pid>/status).
memory_kb() { # $1 = pid
    awk '/^VmRSS:/{r=$2} /^RssAnon:/{a=$2} /^RssFile:/{f=$2} END{print r+0, a+0, f+0}' "/proc/$1/status"
}
