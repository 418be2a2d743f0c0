//! Shared by the SIP integration tests: a SIP node on its own port with its
//! own database, a test call handler standing in for the agent runtime, a
//! SIPp runner and call_logs polling.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard::config::Config;
use switchboard::db::testing::TestDb;
use switchboard::records::RecordWriter;
use switchboard::sip::call::{
    CallCommand, CallEvent, CallHandler, HangupBy, IncomingCall, NegotiatedMedia,
};
use switchboard::sip::{SipOptions, SipServer, SipServerHandle};
use uuid::Uuid;

/// What the stand-in runtime saw of one call.
#[derive(Debug, Clone)]
pub struct SeenCall {
    pub call_log_id: Uuid,
    pub from_number: String,
    pub to_number: String,
    pub media: NegotiatedMedia,
    pub rtp_packets: Arc<AtomicUsize>,
    pub events: Arc<Mutex<Vec<CallEvent>>>,
}

/// What the test handler does with a call once it has it.
#[derive(Debug, Clone)]
pub enum Script {
    /// Keep the call until SIP says it is over.
    Hold,
    /// Hang up (as the agent) after a delay.
    HangupAfter(Duration),
    /// Ask for a blind transfer after a delay.
    TransferAfter(Duration, String),
}

#[derive(Clone)]
pub struct TestHandler {
    pub seen: Arc<Mutex<Vec<SeenCall>>>,
    pub script: Script,
}

impl CallHandler for TestHandler {
    fn on_call(&self, call: IncomingCall) {
        let seen = SeenCall {
            call_log_id: call.call_log_id,
            from_number: call.from_number.clone(),
            to_number: call.to_number.clone(),
            media: call.media.clone(),
            rtp_packets: Arc::new(AtomicUsize::new(0)),
            events: Arc::new(Mutex::new(Vec::new())),
        };
        self.seen.lock().unwrap().push(seen.clone());
        let script = self.script.clone();
        // on_call must not block: the call runs in its own task.
        tokio::spawn(async move {
            let IncomingCall {
                rtp_socket,
                rtp_port,
                mut events,
                commands,
                ..
            } = call;
            let _lease = rtp_port;
            let socket =
                tokio::net::UdpSocket::from_std(rtp_socket).expect("RTP socket into tokio");
            let mut buf = vec![0u8; 2048];
            let act_at = match &script {
                Script::Hold => None,
                Script::HangupAfter(d) | Script::TransferAfter(d, _) => {
                    Some(tokio::time::Instant::now() + *d)
                }
            };
            let mut acted = false;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            loop {
                let act = async {
                    match act_at {
                        Some(at) if !acted => tokio::time::sleep_until(at).await,
                        _ => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    r = socket.recv_from(&mut buf) => {
                        if r.is_ok() {
                            seen.rtp_packets.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    ev = events.recv() => match ev {
                        Some(ev) => {
                            let over = matches!(ev, CallEvent::Hangup { .. });
                            seen.events.lock().unwrap().push(ev);
                            if over {
                                break;
                            }
                        }
                        None => break,
                    },
                    _ = act => {
                        acted = true;
                        let cmd = match &script {
                            Script::TransferAfter(_, target) => CallCommand::Transfer { target: target.clone() },
                            _ => CallCommand::Hangup { by: HangupBy::Agent, reason: "agent said goodbye".into() },
                        };
                        let _ = commands.send(cmd).await;
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        });
    }
}

pub struct Node {
    pub db: TestDb,
    pub server: SipServerHandle,
    pub handler: TestHandler,
    pub config: Config,
}

impl Node {
    pub async fn start() -> Node {
        Self::start_with(SipOptions::default(), Script::Hold).await
    }

    /// A seeded database and a SIP server on 127.0.0.1 with a free port.
    pub async fn start_with(options: SipOptions, script: Script) -> Node {
        Self::start_env(options, script, &[]).await
    }

    /// Same, with extra `SWITCHBOARD_...` configuration.
    pub async fn start_env(options: SipOptions, script: Script, extra: &[(&str, &str)]) -> Node {
        let db = TestDb::new().await;
        switchboard::db::seed::seed_demo(&db.pool)
            .await
            .expect("seed demo");
        let mut env = vec![
            (
                "SWITCHBOARD_SIP__LISTEN".to_string(),
                "127.0.0.1:0".to_string(),
            ),
            ("SWITCHBOARD_NODE_ID".to_string(), "test-node".to_string()),
            ("DATABASE_URL".to_string(), db.url.clone()),
            ("SWITCHBOARD_RECORDS__SPOOL_DIR".to_string(), String::new()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::load_from(None, &env).expect("config");
        let handler = TestHandler {
            seen: Arc::new(Mutex::new(Vec::new())),
            script,
        };
        let records = RecordWriter::start(db.pool.clone(), &config.records);
        let server = SipServer::start_with(
            &config,
            db.pool.clone(),
            records,
            Arc::new(handler.clone()),
            options,
        )
        .await
        .expect("SIP server starts");
        Node {
            db,
            server,
            handler,
            config,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub async fn sql(&self, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&self.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Polls call_logs until `n` rows are in a final state (bounded: 10 s).
    pub async fn final_rows(&self, n: usize) -> Vec<CallLogRow> {
        for _ in 0..100 {
            let rows = self.rows().await;
            if rows
                .iter()
                .filter(|r| r.status != "ringing" && r.status != "in_progress")
                .count()
                >= n
            {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "call_logs never reached {n} final rows: {:?}",
            self.rows().await
        );
    }

    pub async fn rows(&self) -> Vec<CallLogRow> {
        sqlx::query_as::<_, CallLogRow>(
            "select id, status, sip_code, hangup_by, hangup_reason, duration_ms, codec, from_number, to_number, \
             sip_call_id, node_id, answered_at is not null as answered, ended_at is not null as ended \
             from call_logs order by started_at",
        )
        .fetch_all(&self.db.pool)
        .await
        .expect("read call_logs")
    }

    pub fn seen(&self) -> Vec<SeenCall> {
        self.handler.seen.lock().unwrap().clone()
    }

    /// Waits (bounded) until no call is live on the node and every RTP
    /// port is back in the pool.
    pub async fn wait_idle(&self) {
        for _ in 0..100 {
            if self.server.live_calls() == 0 && self.server.rtp_ports_in_use() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "calls still live: {}, RTP ports leased: {}",
            self.server.live_calls(),
            self.server.rtp_ports_in_use()
        );
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CallLogRow {
    pub id: Uuid,
    pub status: String,
    pub sip_code: Option<i32>,
    pub hangup_by: Option<String>,
    pub hangup_reason: Option<String>,
    pub duration_ms: Option<i64>,
    pub codec: Option<String>,
    pub from_number: Option<String>,
    pub to_number: Option<String>,
    pub sip_call_id: Option<String>,
    pub node_id: Option<String>,
    pub answered: bool,
    pub ended: bool,
}

pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sipp")
        .join(name)
}

/// A port (a multiple of four) with `span` consecutive UDP ports free (and
/// TCP on the first) right now, in 26000–31999: below the kernel's
/// ephemeral range (no other test's connection is given it before SIPp
/// binds it) and away from the test nodes' RTP ranges (36000–56999) and
/// `common::node::free_port` (20000–25999).
/// Blocks of four handed out in this process: SIPp runs started at once
/// never get overlapping ports (SIPp binds them only once it runs).
fn free_ports(span: u16) -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..200 {
        let p = 26_000 + (rand::random::<u16>() % 1500) * 4;
        if handed.contains(&p) {
            continue;
        }
        let udp: Vec<_> = (p..p + span.min(4))
            .map(|q| std::net::UdpSocket::bind(("127.0.0.1", q)))
            .collect();
        let tcp = std::net::TcpListener::bind(("127.0.0.1", p));
        if udp.iter().all(Result::is_ok) && tcp.is_ok() {
            handed.push(p);
            return p;
        }
    }
    panic!("no free port");
}

/// A port free for both UDP and TCP right now, for SIPp's -p.
pub fn free_port() -> u16 {
    free_ports(2)
}

/// SIPp's -mp: it binds audio RTP/RTCP there and video RTP/RTCP at +2, +3.
pub fn free_media_port() -> u16 {
    free_ports(4)
}

#[derive(Debug)]
pub struct SippRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub errors: String,
    pub messages: String,
}

impl SippRun {
    pub fn assert_ok(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "SIPp failed.\nerrors:\n{}\nstdout tail:\n{}",
            self.errors,
            tail(&self.stdout)
        );
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Runs SIPp once (`-m 1`) against `server` and returns its exit code and logs.
pub async fn sipp(
    server: SocketAddr,
    scenario_name: &str,
    service: &str,
    extra: &[&str],
) -> SippRun {
    let (port, media_port) = (free_port(), free_media_port());
    sipp_with(
        server,
        scenario_name,
        service,
        extra,
        (port, media_port),
        20,
    )
    .await
}

/// The same from chosen ports (SIP, media) with a scenario time limit.
pub async fn sipp_with(
    server: SocketAddr,
    scenario_name: &str,
    service: &str,
    extra: &[&str],
    (port, media_port): (u16, u16),
    limit_secs: u64,
) -> SippRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let errors = dir.path().join("errors.log");
    let messages = dir.path().join("messages.log");
    let (port, media_port) = (port.to_string(), media_port.to_string());
    let limit = format!("{limit_secs}s");
    let mut cmd = tokio::process::Command::new("sipp");
    cmd.arg(server.to_string())
        .arg("-sf")
        .arg(scenario(scenario_name))
        .args([
            "-s",
            service,
            "-m",
            "1",
            "-timeout",
            &limit,
            "-timeout_error",
            "-nostdin",
        ])
        .args(["-p", &port, "-mp", &media_port, "-trace_err", "-trace_msg"])
        .arg("-error_file")
        .arg(&errors)
        .arg("-message_file")
        .arg(&messages)
        .args(extra)
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .expect("sipp must be installed (Debian sip-tester)");
    let out = tokio::time::timeout(
        Duration::from_secs(limit_secs.max(70) + 20),
        child.wait_with_output(),
    )
    .await
    .expect("SIPp did not finish in time")
    .expect("SIPp output");
    SippRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr),
        errors: std::fs::read_to_string(&errors).unwrap_or_default(),
        messages: std::fs::read_to_string(&messages).unwrap_or_default(),
    }
}

/// A SIPp UAS (an outbound trunk) on its own loopback port.
pub struct Uas {
    child: tokio::process::Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Uas {
    /// Starts `sipp -sf <scenario>` as a server (`transport` u1 or t1) and
    /// waits (bounded) until it holds its port.
    pub async fn start(scenario_name: &str, transport: &str, extra: &[&str]) -> Uas {
        Self::start_calls(scenario_name, transport, 1, 45, extra).await
    }

    /// The same for `calls` calls, all done within `limit_secs`.
    pub async fn start_calls(
        scenario_name: &str,
        transport: &str,
        calls: u32,
        limit_secs: u32,
        extra: &[&str],
    ) -> Uas {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let media_port = free_media_port();
        let mut cmd = tokio::process::Command::new("sipp");
        cmd.arg("-sf")
            .arg(scenario(scenario_name))
            .args(["-i", "127.0.0.1", "-t", transport, "-m", &calls.to_string()])
            .args([
                "-timeout",
                &format!("{limit_secs}s"),
                "-timeout_error",
                "-nostdin",
            ])
            .args(["-p", &port.to_string(), "-mp", &media_port.to_string()])
            .args(["-trace_err", "-trace_msg"])
            .arg("-error_file")
            .arg(dir.path().join("errors.log"))
            .arg("-message_file")
            .arg(dir.path().join("messages.log"))
            .args(extra)
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .expect("sipp must be installed (Debian sip-tester)");
        let mut bound = false;
        for _ in 0..100 {
            bound = match transport {
                "t1" => std::net::TcpListener::bind(("127.0.0.1", port)).is_err(),
                _ => std::net::UdpSocket::bind(("127.0.0.1", port)).is_err(),
            };
            if bound {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !bound {
            let _ = child.start_kill();
            let out = child.wait_with_output().await.expect("SIPp output");
            panic!(
                "SIPp did not bind 127.0.0.1:{port} in 5 s: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Uas { child, port, dir }
    }

    /// Waits (bounded: 60 s) for SIPp to finish its calls.
    pub async fn finish(self) -> SippRun {
        let out = tokio::time::timeout(Duration::from_secs(60), self.child.wait_with_output())
            .await
            .expect("SIPp did not finish in 60 s")
            .expect("SIPp output");
        let read = |name: &str| -> String {
            std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
        };
        SippRun {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
            errors: read("errors.log"),
            messages: read("messages.log"),
        }
    }
}
