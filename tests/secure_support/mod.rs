//! Shared by the secure-trunk tests (TLS, SRTP, WebSocket, Opus, session
//! timers): ports from this suite's range (53000–53999), a CA and
//! certificates made with the openssl CLI, a call handler that runs a real
//! media session (SRTP when negotiated) playing a tone and measuring what
//! it hears, and baresip as a scripted softphone over UDP, TLS or
//! WebSocket with SRTP or Opus. Builds on `tests/common` (baresip, logs)
//! and `tests/sip_support` (SIPp), which each test crate declares beside it.
#![allow(dead_code)]

pub use crate::common::node::init_logs;
use crate::common::run;
pub use crate::sip_support::SippRun;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard::media::{MediaEvent, MediaSession, SessionConfig, SessionReport};
use switchboard::sip::call::{
    CallCommand, CallEvent, CallHandler, HangupBy, IncomingCall, NegotiatedMedia,
};

/// Ports of this suite: each test file takes a block of 200 from here.
pub const PORT_BASE: u16 = 53_000;

/// A block of `n` ports starting at `base` (within 53000–53999). The
/// kernel also hands out this range as ephemeral ports (a database
/// connection may hold one for a while), so the ports that must be bound
/// exactly (the first four: SIP listeners, SIPp's media) are waited for,
/// up to 10 s; the rest of a block is an RTP range, where a taken port is
/// skipped by whoever allocates from it.
pub fn ports(base: u16, n: u16) -> u16 {
    assert!(
        base >= PORT_BASE && base + n <= 54_000,
        "outside the suite's range"
    );
    let free = |p: u16| {
        std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
    };
    for _ in 0..100 {
        if (base..base + n.min(4)).all(free) {
            return base;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "ports {base}..{} of this suite's range stayed taken for 10 s",
        base + n.min(4)
    );
}

/// A test CA and certificates it signed (EC P-256), made by the openssl
/// CLI: the node's (for 127.0.0.1), and a client's (mutual TLS).
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    /// Certificate then key in one file (baresip's `sip_certificate`).
    pub client_bundle: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let p = |n: &str| dir.join(n);
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=Switchboard Test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.pem")));
        for (name, cn) in [("node", "127.0.0.1"), ("client", "test-client")] {
            run(Command::new("openssl")
                .args([
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                ])
                .args(["-nodes", "-subj", &format!("/CN={cn}")])
                .arg("-keyout")
                .arg(p(&format!("{name}.key")))
                .arg("-out")
                .arg(p(&format!("{name}.csr"))));
            std::fs::write(
                p(&format!("{name}.ext")),
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
                 extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
            )
            .expect("ext file");
            run(Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
                .arg("-in")
                .arg(p(&format!("{name}.csr")))
                .arg("-CA")
                .arg(p("ca.pem"))
                .arg("-CAkey")
                .arg(p("ca.key"))
                .arg("-extfile")
                .arg(p(&format!("{name}.ext")))
                .arg("-out")
                .arg(p(&format!("{name}.pem"))));
        }
        let bundle = [
            std::fs::read(p("client.pem")).expect("client cert"),
            std::fs::read(p("client.key")).expect("client key"),
        ]
        .concat();
        std::fs::write(p("client-bundle.pem"), bundle).expect("bundle");
        Pki {
            dir: dir.to_path_buf(),
            ca: p("ca.pem"),
            node_cert: p("node.pem"),
            node_key: p("node.key"),
            client_bundle: p("client-bundle.pem"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
        }
    }
}

fn rms(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    (pcm.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt()
}

/// Mono 16 kHz samples of a 440 Hz tone.
pub fn tone_16k(ms: u32) -> Vec<i16> {
    (0..ms * 16)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 16_000.0).sin()) as i16)
        .collect()
}

/// What the media handler saw of one call.
#[derive(Clone, Default)]
pub struct MediaCall {
    pub media: Arc<Mutex<Option<NegotiatedMedia>>>,
    /// 20 ms frames heard from the caller, and those with sound in them.
    pub frames: Arc<AtomicUsize>,
    pub voiced: Arc<AtomicUsize>,
    pub digits: Arc<Mutex<String>>,
    pub hangup: Arc<Mutex<Option<(HangupBy, String)>>>,
    pub report: Arc<Mutex<Option<SessionReport>>>,
}

impl MediaCall {
    pub fn media(&self) -> NegotiatedMedia {
        self.media
            .lock()
            .unwrap()
            .clone()
            .expect("the call reached the handler")
    }

    pub fn report(&self) -> Option<SessionReport> {
        self.report.lock().unwrap().clone()
    }
}

/// Stands in for the agent runtime with a real media session: plays a
/// tone into the call, listens, records when asked, and hangs up after
/// `hangup_after` (else when SIP says the call is over).
#[derive(Clone, Default)]
pub struct MediaHandler {
    pub calls: Arc<Mutex<Vec<MediaCall>>>,
    pub record_dir: Option<PathBuf>,
    pub hangup_after: Option<Duration>,
}

impl MediaHandler {
    pub fn call(&self, i: usize) -> MediaCall {
        self.calls.lock().unwrap()[i].clone()
    }

    /// Waits (bounded) for the report of call `i` (its session closed).
    pub async fn finished(&self, i: usize, limit: Duration) -> SessionReport {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(c) = self.calls.lock().unwrap().get(i) {
                if let Some(r) = c.report() {
                    return r;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "call {i} did not finish within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl CallHandler for MediaHandler {
    fn on_call(&self, call: IncomingCall) {
        let seen = MediaCall::default();
        *seen.media.lock().unwrap() = Some(call.media.clone());
        self.calls.lock().unwrap().push(seen.clone());
        let record = self
            .record_dir
            .as_ref()
            .map(|d| d.join(format!("{}.wav", call.call_log_id)));
        let hangup_after = self.hangup_after;
        tokio::spawn(async move {
            let IncomingCall {
                media,
                rtp_socket,
                rtp_port,
                mut events,
                commands,
                ..
            } = call;
            let _lease = rtp_port;
            let mut cfg = SessionConfig::new(
                media.remote_addr,
                media.codec,
                media.payload_type,
                media.telephone_event_pt,
            );
            cfg.sources = media.sources;
            cfg.srtp = media.srtp.clone();
            cfg.record_path = record;
            let (session, mut rx) = match MediaSession::start(rtp_socket, cfg) {
                Ok(s) => s,
                Err(e) => panic!("media session: {e}"),
            };
            let _ = session.playout().play(1, tone_16k(4000), 16_000);
            let stop = async {
                match hangup_after {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(stop);
            let mut media_open = true;
            loop {
                tokio::select! {
                    ev = rx.recv(), if media_open => match ev {
                        Some(MediaEvent::Audio(f)) => {
                            seen.frames.fetch_add(1, Ordering::Relaxed);
                            if rms(&f.samples) > 300.0 {
                                seen.voiced.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some(MediaEvent::Dtmf { digit, .. }) => seen.digits.lock().unwrap().push(digit),
                        Some(_) => {}
                        None => media_open = false,
                    },
                    ev = events.recv() => match ev {
                        Some(CallEvent::Hangup { by, reason }) => {
                            *seen.hangup.lock().unwrap() = Some((by, reason));
                            break;
                        }
                        Some(_) => {}
                        None => break,
                    },
                    _ = &mut stop => {
                        let _ = commands.send(CallCommand::Hangup {
                            by: HangupBy::Agent,
                            reason: "test handler hung up".into(),
                        }).await;
                        hangup_after_done(&mut events).await;
                        break;
                    }
                }
            }
            *seen.report.lock().unwrap() = Some(session.close().await);
        });
    }
}

/// After our hang-up, SIP confirms with its own Hangup event (bounded).
async fn hangup_after_done(events: &mut tokio::sync::mpsc::Receiver<CallEvent>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(ev) = events.recv().await {
            if matches!(ev, CallEvent::Hangup { .. }) {
                return;
            }
        }
    })
    .await;
}

/// How baresip should call.
#[derive(Debug, Clone, Default)]
pub struct Softphone {
    /// `sip_listen` port (UDP and TCP; TLS on the same port).
    pub sip_port: u16,
    /// First of baresip's RTP ports (it takes a range of 10).
    pub rtp_port: u16,
    /// `mediaenc=srtp-mand` (SDES SRTP, RTP/SAVP).
    pub srtp: bool,
    /// Offer Opus only.
    pub opus: bool,
    /// CA to verify the node's certificate; our certificate (mutual TLS).
    pub ca: Option<PathBuf>,
    pub certificate: Option<PathBuf>,
    /// Answer incoming calls at once (baresip as the far end).
    pub auto_answer: bool,
    /// The account's user (`test` by default; a callee is called by it).
    pub user: Option<String>,
}

/// A headless baresip run: its config folder and what it printed.
pub struct Baresip {
    pub dir: PathBuf,
    pub output: std::process::Output,
}

impl Baresip {
    fn configure(dir: &Path, phone: &Softphone, wav: &Path) {
        std::fs::create_dir_all(dir).expect("baresip dir");
        let mut config = format!(
            "poll_method\tepoll\nsip_listen\t127.0.0.1:{sip}\n\
             audio_player\taufile,/dev/null\naudio_source\taufile,{wav}\naudio_alert\taufile,/dev/null\n\
             audio_channels\t1\n\
             module_path\t/usr/lib/baresip/modules\nmodule\tg711.so\n{extra}module\taccount.so\nmodule\taufile.so\nmodule\tsndfile.so\n\
             module_app\tmenu.so\nsnd_path\t{dir}\nrtp_ports\t{rtp}-{rtp_end}\n",
            sip = phone.sip_port,
            rtp = phone.rtp_port,
            rtp_end = phone.rtp_port + 9,
            wav = wav.display(),
            dir = dir.display(),
            // Media encryption and codecs load before the accounts that name them.
            extra = match (phone.srtp, phone.opus) {
                (true, true) => "module\tsrtp.so\nmodule\topus.so\n",
                (true, false) => "module\tsrtp.so\n",
                (false, true) => "module\topus.so\n",
                (false, false) => "",
            }
        );
        if !phone.opus {
            config.push_str("audio_srate\t8000\n");
        }
        if let Some(ca) = &phone.ca {
            config.push_str(&format!("sip_cafile\t{}\n", ca.display()));
        }
        if let Some(cert) = &phone.certificate {
            config.push_str(&format!("sip_certificate\t{}\n", cert.display()));
        }
        std::fs::write(dir.join("config"), config).expect("baresip config");
        let mut account = format!(
            "<sip:{}@127.0.0.1>;regint=0",
            phone.user.as_deref().unwrap_or("test")
        );
        if phone.srtp {
            account.push_str(";mediaenc=srtp-mand");
        }
        if phone.opus {
            account.push_str(";audio_codecs=opus/48000/2");
        }
        if phone.auto_answer {
            account.push_str(";answermode=auto");
        }
        std::fs::write(dir.join("accounts"), format!("{account}\n")).expect("accounts");
        std::fs::write(dir.join("contacts"), "").expect("contacts");
    }

    /// Dials `uri` playing `wav`; quits after `max_secs` (the call ends
    /// when the file does).
    pub fn dial(dir: &Path, phone: &Softphone, uri: &str, wav: &Path, max_secs: u32) -> Baresip {
        Self::configure(dir, phone, wav);
        let output = crate::common::baresip_dial(dir, uri, max_secs);
        Baresip {
            dir: dir.to_path_buf(),
            output,
        }
    }

    /// Starts baresip as a callee (auto-answer) in the background.
    pub fn listen(
        dir: &Path,
        phone: &Softphone,
        wav: &Path,
        max_secs: u32,
    ) -> tokio::process::Child {
        Self::configure(dir, phone, wav);
        tokio::process::Command::new("baresip")
            .arg("-f")
            .arg(dir)
            .arg("-t")
            .arg(max_secs.to_string())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout.log")).expect("log"))
            .stderr(std::fs::File::create(dir.join("stderr.log")).expect("log"))
            .kill_on_drop(true)
            .spawn()
            .expect("baresip (Debian package baresip-core) must be installed")
    }

    pub fn log(&self) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }

    /// The decoded audio baresip received (`dump-*-dec.wav`).
    pub fn received_wav(dir: &Path) -> Option<PathBuf> {
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("dump-") && n.ends_with("-dec.wav"))
            })
    }
}

/// RMS of a WAV file's first channel over its loudest second.
pub fn loudest_second_rms(path: &Path) -> f64 {
    let mut reader =
        hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = reader.spec();
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.unwrap_or(0))
        .step_by(spec.channels as usize)
        .collect();
    samples
        .chunks(spec.sample_rate as usize)
        .map(rms)
        .fold(0.0, f64::max)
}

/// The caller's microphone: `secs` of a 1 kHz tone at 8 kHz (or 48 kHz),
/// then silence until the file ends at `total_secs`.
pub fn tone_wav(dir: &Path, rate: u32, secs: u32, total_secs: u32) -> PathBuf {
    tone_wav_channels(dir, rate, 1, secs, total_secs)
}

/// The same in `channels` channels (baresip's file source must match its
/// encoder: Opus is opened as 48 kHz stereo).
pub fn tone_wav_channels(
    dir: &Path,
    rate: u32,
    channels: u16,
    secs: u32,
    total_secs: u32,
) -> PathBuf {
    let path = dir.join(format!("tone-{rate}-{channels}.wav"));
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).expect("wav");
    for i in 0..rate * total_secs {
        let s = if i < rate * secs {
            (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / rate as f64).sin()) as i16
        } else {
            0
        };
        for _ in 0..channels {
            w.write_sample(s).expect("sample");
        }
    }
    w.finalize().expect("wav");
    path
}

/// A SIP node on this suite's ports with a seeded database (the demo
/// workspace, trunk admitting 127.0.0.0/8, number +15555550100) and the
/// media handler standing in for the runtime.
pub struct SecureNode {
    pub db: switchboard::db::testing::TestDb,
    pub server: switchboard::sip::SipServerHandle,
    pub handler: MediaHandler,
    pub config: switchboard::config::Config,
}

impl SecureNode {
    /// `base`: SIP UDP/TCP on base, TLS base+1, WS base+2, RTP from base+10
    /// to base+60; `extra` configuration on top.
    pub async fn start(base: u16, handler: MediaHandler, extra: &[(&str, String)]) -> SecureNode {
        let db = switchboard::db::testing::TestDb::new().await;
        switchboard::db::seed::seed_demo(&db.pool)
            .await
            .expect("seed demo");
        let mut env: Vec<(String, String)> = vec![
            (
                "SWITCHBOARD_SIP__LISTEN".into(),
                format!("127.0.0.1:{base}"),
            ),
            (
                "SWITCHBOARD_SIP__TLS_LISTEN".into(),
                format!("127.0.0.1:{}", base + 1),
            ),
            ("SWITCHBOARD_RTP__PORT_MIN".into(), (base + 10).to_string()),
            ("SWITCHBOARD_RTP__PORT_MAX".into(), (base + 60).to_string()),
            ("SWITCHBOARD_NODE_ID".into(), "secure-node".into()),
            ("DATABASE_URL".into(), db.url.clone()),
            ("SWITCHBOARD_RECORDS__SPOOL_DIR".into(), String::new()),
        ];
        env.extend(crate::common::node::one_core_models());
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let config = switchboard::config::Config::load_from(None, &env).expect("config");
        let records = switchboard::records::RecordWriter::start(db.pool.clone(), &config.records);
        let server = switchboard::sip::SipServer::start_with(
            &config,
            db.pool.clone(),
            records,
            Arc::new(handler.clone()),
            switchboard::sip::SipOptions {
                codecs: vec![
                    switchboard::media::Codec::Pcmu,
                    switchboard::media::Codec::Pcma,
                    switchboard::media::Codec::Opus,
                ],
                ..Default::default()
            },
        )
        .await
        .expect("SIP server starts");
        SecureNode {
            db,
            server,
            handler,
            config,
        }
    }

    pub async fn sql(&self, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&self.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The call_logs rows: status, sip_code, hangup_by, hangup_reason, codec.
    pub async fn rows(&self) -> Vec<CallRow> {
        sqlx::query_as(
            "select status, sip_code, hangup_by, hangup_reason, codec, duration_ms \
             from call_logs order by started_at",
        )
        .fetch_all(&self.db.pool)
        .await
        .expect("call_logs")
    }

    /// Polls until `n` rows are final (bounded).
    pub async fn final_rows(&self, n: usize, limit: Duration) -> Vec<CallRow> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let rows = self.rows().await;
            if rows
                .iter()
                .filter(|r| r.status != "ringing" && r.status != "in_progress")
                .count()
                >= n
            {
                return rows;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "call_logs never reached {n} final rows: {rows:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CallRow {
    pub status: String,
    pub sip_code: Option<i32>,
    pub hangup_by: Option<String>,
    pub hangup_reason: Option<String>,
    pub codec: Option<String>,
    pub duration_ms: Option<i64>,
}

/// Runs one SIPp scenario (`tests/fixtures/sipp/NAME`) against `server`
/// from `port` (media at `media_port`..+3), calling +15555550100, within
/// 150 s.
pub async fn sipp_run(
    server: std::net::SocketAddr,
    scenario: &str,
    port: u16,
    media_port: u16,
) -> SippRun {
    crate::sip_support::sipp_with(
        server,
        scenario,
        "+15555550100",
        &["-i", "127.0.0.1"],
        (port, media_port),
        150,
    )
    .await
}
