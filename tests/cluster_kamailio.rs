//! A cluster as an operator runs it: `scripts/cluster start` puts Kamailio
//! (Debian kamailio 5.6, dispatcher) in front of two `switchboard serve`
//! processes on one PostgreSQL; SIPp callers dial Kamailio. Kamailio and the
//! nodes listen on 127.0.0.7 (the nodes trust it as their proxy; an
//! address no other suite uses, so its probes never reach another test), callers
//! speak from 127.0.0.2, and the demo trunk admits only 127.0.0.2: a call
//! gets in only if the node took the caller's address from Kamailio.

use crate::common;
use crate::sip_support;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use switchboard::db::testing::TestDb;
use uuid::Uuid;

use common::node::{free_port, poll};
use sip_support::{free_media_port, scenario};

const PROXY_IP: &str = "127.0.0.7";
const CALLER_IP: &str = "127.0.0.2";
const NUMBER: &str = "+15555550100";

struct Cluster {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    kamailio: SocketAddr,
    sip: [SocketAddr; 2],
    api: [String; 2],
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster")
}

impl Cluster {
    /// `scripts/cluster start` on free ports, RTP from `rtp_base` (two
    /// ranges of 400), on the test's database; the demo workspace seeded.
    fn start(db: &TestDb, rtp_base: u16, drain_secs: u32) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let (k, s1, s2, a1, a2) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), db.url.clone()),
            ("CLUSTER_DIR".into(), dir.path().display().to_string()),
            (
                "SWITCHBOARD_BIN".into(),
                env!("CARGO_BIN_EXE_switchboard").into(),
            ),
            ("CLUSTER_IP".into(), PROXY_IP.into()),
            ("CLUSTER_SIP_PORT".into(), k.to_string()),
            ("NODE_SIP_PORTS".into(), format!("{s1} {s2}")),
            ("NODE_API_PORTS".into(), format!("{a1} {a2}")),
            (
                "NODE_RTP_RANGES".into(),
                format!(
                    "{}-{} {}-{}",
                    rtp_base,
                    rtp_base + 399,
                    rtp_base + 400,
                    rtp_base + 799
                ),
            ),
            ("CLUSTER_DRAIN_SECS".into(), drain_secs.to_string()),
            // Three clusters side by side on two cores: no load shedding.
            ("SWITCHBOARD_ADMISSION__MAX_STT_WAIT_MS".into(), "0".into()),
        ];
        env.extend(common::node::one_core_models());
        let out = Command::new(script())
            .arg("start")
            .envs(env.iter().cloned())
            .output()
            .expect("scripts/cluster runs");
        let c = Cluster {
            kamailio: format!("{PROXY_IP}:{k}").parse().expect("addr"),
            sip: [
                format!("{PROXY_IP}:{s1}").parse().expect("addr"),
                format!("{PROXY_IP}:{s2}").parse().expect("addr"),
            ],
            api: [
                format!("http://{PROXY_IP}:{a1}"),
                format!("http://{PROXY_IP}:{a2}"),
            ],
            dir,
            env,
        };
        assert!(
            out.status.success(),
            "scripts/cluster start failed:\n{}{}\nnode-1: {}\nnode-2: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            c.log_tail(1),
            c.log_tail(2)
        );
        c
    }

    fn log_tail(&self, node: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join(format!("node-{node}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn pid(&self, node: usize) -> i32 {
        std::fs::read_to_string(self.dir.path().join(format!("node-{node}.pid")))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid")
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) both nodes' processes.
    fn pause_nodes(&self, pause: bool) {
        for node in [1, 2] {
            let signal = if pause { "-STOP" } else { "-CONT" };
            let ok = Command::new("kill")
                .args([signal, &self.pid(node).to_string()])
                .status()
                .expect("kill")
                .success();
            assert!(ok, "kill {signal} node-{node}");
        }
    }

    fn status(&self) -> String {
        let out = Command::new(script())
            .arg("status")
            .envs(self.env.iter().cloned())
            .output()
            .expect("scripts/cluster status");
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .envs(self.env.iter().cloned())
            .env("CLUSTER_DRAIN_SECS", "2")
            .output();
    }
}

/// The seeded demo trunk admits only the callers' address.
async fn trunk_admits_only_callers(pool: &PgPool, max_calls: i32) {
    sqlx::query("update sip_trunks set inbound_cidrs = $1::cidr[], max_concurrent_calls = $2")
        .bind(vec![format!("{CALLER_IP}/32")])
        .bind(max_calls)
        .execute(pool)
        .await
        .expect("trunk");
}

/// The callers' scenario (`tests/fixtures/sipp/`), without `.xml`: SIPp
/// names its error log after it.
const CALLER_SCENARIO: &str = "uac_call";

/// SIPp running `uac_call.xml` (it follows Record-Route) from the callers'
/// address: `calls` calls at `rate`/s, each held `hold_ms`.
fn sipp_calls(to: SocketAddr, calls: u32, rate: u32, hold_ms: u32) -> tokio::process::Child {
    let dir = std::env::temp_dir();
    tokio::process::Command::new("sipp")
        .arg(to.to_string())
        .arg("-sf")
        .arg(scenario(&format!("{CALLER_SCENARIO}.xml")))
        .args(["-s", NUMBER, "-i", CALLER_IP])
        .args(["-m", &calls.to_string(), "-l", &calls.to_string()])
        .args(["-r", &rate.to_string(), "-d", &hold_ms.to_string()])
        .args(["-p", &sip_support::free_port().to_string()])
        .args(["-mp", &free_media_port().to_string()])
        .args([
            "-timeout",
            "90s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
        ])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp must be installed (Debian sip-tester)")
}

/// Waits for SIPp (bounded) and returns (exit code, output tail, with the
/// first lines of SIPp's error log: why a call was aborted).
async fn finish(child: tokio::process::Child, limit: Duration) -> (Option<i32>, String) {
    // `-trace_err` writes `<scenario>_<pid>_errors.log` in SIPp's directory.
    let errors = child
        .id()
        .map(|pid| std::env::temp_dir().join(format!("{CALLER_SCENARIO}_{pid}_errors.log")));
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .expect("SIPp did not finish in time")
        .expect("SIPp output");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(30)..].join("\n");
    if let Some(path) = errors {
        if let Ok(log) = std::fs::read_to_string(&path) {
            let lines: Vec<&str> = log.lines().collect();
            // The first events say why; the rest follow from them.
            tail.push_str("\nSIPp's error log:\n");
            tail.push_str(&lines[..lines.len().min(40)].join("\n"));
        }
        let _ = std::fs::remove_file(path);
    }
    (out.status.code(), tail)
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// Live calls per node, as the shared count holds them.
async fn live_by_node(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("select node_id, count(*) from live_calls group by 1 order by 1")
        .fetch_all(pool)
        .await
        .expect("live_calls")
}

/// One SIP OPTIONS over UDP; the status code of the answer.
fn options_status(to: SocketAddr) -> Option<u16> {
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let me = s.local_addr().ok()?;
    let msg = format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=1\r\nTo: <sip:{to}>\r\n\
         Call-ID: {}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        Uuid::new_v4().simple(),
        Uuid::new_v4()
    );
    s.send_to(msg.as_bytes(), to).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.split(' ').nth(1)?.parse().ok()
}

async fn manager_key(pool: &PgPool) -> (Uuid, String) {
    let workspace: Uuid = sqlx::query_scalar("select workspace_id from sip_trunks limit 1")
        .fetch_one(pool)
        .await
        .expect("workspace");
    let (key, prefix, hash) = switchboard::api::auth::generate_api_key();
    sqlx::query(
        "insert into api_keys (workspace_id, name, prefix, key_hash, role) values ($1, 'cluster', $2, $3, 'MANAGER')",
    )
    .bind(workspace)
    .bind(&prefix)
    .bind(&hash)
    .execute(pool)
    .await
    .expect("api key");
    (workspace, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_over_both_nodes_and_a_killed_node_leaves_the_rotation() {
    let db = TestDb::new().await;
    let cluster = Cluster::start(&db, 48_600, 5);
    trunk_admits_only_callers(&db.pool, 100).await;
    println!("{}", cluster.status());

    // The proxy's header is believed only from the proxy.
    let spoof = sip_support::sipp(
        cluster.sip[0],
        "uac_spoofed_source.xml",
        NUMBER,
        &["-i", "127.0.0.1"],
    )
    .await;
    spoof.assert_ok();

    let (code, tail) = finish(
        sipp_calls(cluster.kamailio, 12, 6, 1000),
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(code, Some(0), "calls through Kamailio failed:\n{tail}");
    // (The last rows are written just after the callers' BYEs.)
    let per_node = poll(Duration::from_secs(5), || async {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "select node_id, count(*) from call_logs where status = 'completed' group by 1 order by 1",
        )
        .fetch_all(&db.pool)
        .await
        .expect("rows");
        (rows.iter().map(|(_, n)| n).sum::<i64>() == 12).then_some(rows)
    })
    .await
    .expect("twelve completed calls");
    println!("12 calls: {per_node:?}");
    assert_eq!(per_node.len(), 2, "both nodes served calls: {per_node:?}");

    // Calls held on both nodes; the busier node is killed.
    let held_from = chrono::Utc::now();
    let held = sipp_calls(cluster.kamailio, 6, 10, 60_000);
    let spread = poll(Duration::from_secs(20), || async {
        let l: Vec<(String, i64)> = sqlx::query_as(
            "select node_id, count(*) from call_logs where started_at >= $1 \
             and status = 'in_progress' group by 1 order by 1",
        )
        .bind(held_from)
        .fetch_all(&db.pool)
        .await
        .expect("rows");
        (l.iter().map(|(_, n)| n).sum::<i64>() == 6).then_some(l)
    })
    .await
    .expect("six calls in progress");
    let (victim_id, victim_calls) = spread
        .iter()
        .max_by_key(|(_, n)| *n)
        .cloned()
        .expect("a node");
    let victim = if victim_id == "node-1" { 1 } else { 2 };
    let survivor = 3 - victim;
    let killed_at = Instant::now();
    let rc = Command::new("kill")
        .args(["-9", &cluster.pid(victim).to_string()])
        .status()
        .expect("kill");
    assert!(rc.success());
    println!("killed {victim_id} holding {victim_calls} of 6 calls");

    tokio::time::sleep(Duration::from_secs(5).saturating_sub(killed_at.elapsed())).await;
    let before: i64 = count(&db.pool, "select count(*) from call_logs").await;
    let after_kill = chrono::Utc::now();
    let (code, tail) = finish(
        sipp_calls(cluster.kamailio, 10, 5, 500),
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(code, Some(0), "calls 5 s after the kill failed:\n{tail}");
    let new_on = poll(Duration::from_secs(5), || async {
        let on: Vec<(String, i64)> = sqlx::query_as(
            "select node_id, count(*) from call_logs where status = 'completed' \
             and hangup_by = 'caller' and started_at >= $1 group by 1 order by 1",
        )
        .bind(after_kill)
        .fetch_all(&db.pool)
        .await
        .expect("rows");
        (on.iter().map(|(_, n)| n).sum::<i64>() == 10).then_some(on)
    })
    .await;
    assert_eq!(
        count(&db.pool, "select count(*) from call_logs").await - before,
        10,
        "one row per new call, none refused"
    );
    assert_eq!(new_on, Some(vec![(format!("node-{survivor}"), 10)]));

    let closed = poll(Duration::from_secs(10), || async {
        let n = count(
            &db.pool,
            &format!(
                "select count(*) from call_logs where node_id = '{victim_id}' \
                 and status = 'failed' and hangup_reason = 'node_lost' \
                 and started_at >= '{}'",
                held_from.to_rfc3339()
            ),
        )
        .await;
        (n == victim_calls).then_some(n)
    })
    .await;
    println!(
        "the lost node's calls closed {:?} after the kill",
        killed_at.elapsed()
    );
    let victim_rows: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("select status, hangup_by, hangup_reason from call_logs where node_id = $1")
            .bind(&victim_id)
            .fetch_all(&db.pool)
            .await
            .expect("rows");
    assert_eq!(
        closed,
        Some(victim_calls),
        "the lost node's calls were not closed: {victim_rows:?}\n{}",
        cluster.log_tail(survivor)
    );
    assert_eq!(
        count(
            &db.pool,
            &format!("select count(*) from call_logs where node_id = '{victim_id}' and status in ('ringing', 'in_progress')")
        )
        .await,
        0
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_takes_no_new_calls_and_finishes_its_own() {
    let db = TestDb::new().await;
    let cluster = Cluster::start(&db, 49_400, 30);
    trunk_admits_only_callers(&db.pool, 100).await;
    let mut held = sipp_calls(cluster.kamailio, 4, 10, 12_000);
    let spread = poll(Duration::from_secs(20), || async {
        let l = live_by_node(&db.pool).await;
        (l.iter().map(|(_, n)| n).sum::<i64>() == 4).then_some(l)
    })
    .await;
    let Some(spread) = spread else {
        let live = live_by_node(&db.pool).await;
        let _ = held.start_kill();
        let (code, tail) = finish(held, Duration::from_secs(10)).await;
        panic!(
            "four calls were never live at once (now {live:?}); SIPp exited {code:?}:\n{tail}\n\
             node-1:\n{}\nnode-2:\n{}\n{}",
            cluster.log_tail(1),
            cluster.log_tail(2),
            cluster.status()
        );
    };
    let (drained_id, drained_calls) = spread
        .iter()
        .max_by_key(|(_, n)| *n)
        .cloned()
        .expect("a node");
    let drained = if drained_id == "node-1" { 1 } else { 2 };
    let other = 3 - drained;
    let pid = cluster.pid(drained);
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill")
        .success());
    let refusing = poll(Duration::from_secs(3), || async {
        (options_status(cluster.sip[drained - 1]) == Some(503)).then_some(())
    })
    .await;
    assert!(
        refusing.is_some(),
        "a draining node answers OPTIONS with 503"
    );

    let started = chrono::Utc::now();
    let (code, tail) = finish(
        sipp_calls(cluster.kamailio, 8, 4, 500),
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(code, Some(0), "new calls during the drain failed:\n{tail}");
    let nodes: Vec<String> = sqlx::query_scalar(
        "select distinct node_id from call_logs where started_at >= $1 order by 1",
    )
    .bind(started)
    .fetch_all(&db.pool)
    .await
    .expect("rows");
    assert_eq!(
        nodes,
        vec![format!("node-{other}")],
        "new calls went to the draining node"
    );

    let (code, tail) = finish(held, Duration::from_secs(60)).await;
    assert_eq!(
        code,
        Some(0),
        "calls held through the drain failed:\n{tail}"
    );
    let exited = poll(Duration::from_secs(15), || async {
        (!Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")))
        .then_some(())
    })
    .await;
    assert!(exited.is_some(), "the drained node did not exit");
    // Its last records are written before it exits.
    let finished = count(
        &db.pool,
        &format!(
            "select count(*) from call_logs where node_id = '{drained_id}' \
             and status = 'completed' and hangup_by = 'caller'"
        ),
    )
    .await;
    assert_eq!(
        finished, drained_calls,
        "the draining node's calls ended normally"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_limit_holds_across_nodes_and_any_node_lists_and_ends_every_call() {
    let db = TestDb::new().await;
    let cluster = Cluster::start(&db, 50_200, 5);
    trunk_admits_only_callers(&db.pool, 2).await;
    let (workspace, key) = manager_key(&db.pool).await;

    // Six callers at once on a trunk of two: two calls, four busy,
    // wherever Kamailio sent each of them. Both nodes stall for 2.6 s as
    // the INVITEs arrive (a busy host): Kamailio must not give a call to
    // the other node as well, or one caller gets two answers (with a 2 s
    // fail-over timer it did: twelve attempts for six callers).
    cluster.pause_nodes(true);
    let held = sipp_calls(cluster.kamailio, 6, 30, 30_000);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    cluster.pause_nodes(false);
    let settled = poll(Duration::from_secs(20), || async {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("select status, count(*) from call_logs group by 1 order by 1")
                .fetch_all(&db.pool)
                .await
                .expect("rows");
        (rows.iter().map(|(_, n)| n).sum::<i64>() >= 6 && !rows.iter().any(|(s, _)| s == "ringing"))
            .then_some(rows)
    })
    .await
    .expect("six call attempts recorded");
    println!("six callers on a trunk of two: {settled:?}");
    type Attempt = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
    );
    let attempts: Vec<Attempt> = sqlx::query_as(
        "select status, hangup_by, hangup_reason, node_id, duration_ms \
             from call_logs order by started_at",
    )
    .fetch_all(&db.pool)
    .await
    .expect("rows");
    assert_eq!(
        settled,
        vec![("busy".to_string(), 4), ("in_progress".to_string(), 2)],
        "attempts (status, hangup_by, reason, node, ms): {attempts:?}"
    );
    let per_node: Vec<(String, i64)> =
        sqlx::query_as("select node_id, count(*) from call_logs group by 1 order by 1")
            .fetch_all(&db.pool)
            .await
            .expect("rows");
    println!("attempts per node: {per_node:?}");

    // Both nodes' APIs list both calls, each with the node holding it.
    let http = reqwest::Client::new();
    let mut listed = Vec::new();
    for api in &cluster.api {
        let r = http
            .get(format!("{api}/v1/workspaces/{workspace}/calls/live"))
            .header("x-api-key", &key)
            .send()
            .await
            .expect("GET live");
        assert_eq!(r.status(), 200);
        let items = r.json::<serde_json::Value>().await.expect("json")["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut ids: Vec<(String, String)> = items
            .iter()
            .map(|i| {
                (
                    i["call_log_id"].as_str().unwrap_or("").to_string(),
                    i["node_id"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        ids.sort();
        listed.push(ids);
    }
    assert_eq!(listed[0].len(), 2, "{listed:?}");
    assert_eq!(listed[0], listed[1], "both nodes list the same calls");

    // Ended through the API of the node that does not hold it.
    let (call, holder) = listed[0][0].clone();
    let other_api = if holder == "node-1" {
        &cluster.api[1]
    } else {
        &cluster.api[0]
    };
    let r = http
        .delete(format!(
            "{other_api}/v1/workspaces/{workspace}/calls/live/{call}"
        ))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), 202);
    let call_id: Uuid = call.parse().expect("uuid");
    let ended = poll(Duration::from_secs(5), || async {
        let s: String = sqlx::query_scalar("select status from call_logs where id = $1")
            .bind(call_id)
            .fetch_one(&db.pool)
            .await
            .expect("row");
        (s == "completed").then_some(())
    })
    .await;
    assert!(ended.is_some(), "the call another node holds did not end");
    let r = http
        .delete(format!(
            "{other_api}/v1/workspaces/{workspace}/calls/live/{}",
            Uuid::new_v4()
        ))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), 404);
    drop(held);
}
