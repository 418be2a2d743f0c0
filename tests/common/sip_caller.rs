//! A minimal SIP caller inside the test process (UDP, PCMU), for tests that
//! need exact timing: what the caller sent and what came back are stamped on
//! one clock (`Instant`) as packets leave and arrive, so "the agent stopped
//! N ms after the caller started speaking" is measured on the RTP itself,
//! with no softphone jitter buffer in between. It answers the requests a
//! peer gets inside a call (BYE → 200, REFER → 202 + NOTIFY sipfrag 200,
//! or as `answer_refer_with` says: a refusal, or a failure report).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard::media::g711::{alaw_decode, ulaw_decode, ulaw_encode};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// 20 ms of 8 kHz audio.
pub const FRAME: usize = 160;
/// RMS (8 kHz, i16) above which a 20 ms packet counts as voice.
pub const VOICE_RMS: f64 = 300.0;
/// −50 dBFS: where the caller's own speech is taken to begin (lower than
/// `VOICE_RMS`, so a measured reaction time counts from the first sound).
pub const ONSET_RMS: f64 = 104.0;

/// One RTP packet of agent audio, decoded, stamped on arrival.
#[derive(Debug, Clone)]
pub struct Packet {
    pub at: Instant,
    pub rms: f64,
    pub pcm: Vec<i16>,
}

#[derive(Debug, Default)]
pub struct MediaLog {
    pub received: Vec<Packet>,
    /// Send time and RMS of every frame the caller sent with voice in it.
    pub sent_voice: Vec<(Instant, f64)>,
    mic: VecDeque<i16>,
}

/// A SIP request received inside the dialog.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub at: Instant,
    pub method: String,
    pub text: String,
}

impl SeenRequest {
    /// The first header of the request named one of `names` (full and
    /// compact forms).
    pub fn header(&self, names: &[&str]) -> Option<&str> {
        header(&self.text, names)
    }
}

pub struct SipCaller {
    sip: Arc<UdpSocket>,
    server: SocketAddr,
    call_id: String,
    from: String,
    to: String,
    target: String,
    pub answered_at: Instant,
    pub media: Arc<Mutex<MediaLog>>,
    pub requests: Arc<Mutex<Vec<SeenRequest>>>,
    responses: tokio::sync::Mutex<mpsc::Receiver<String>>,
    stop: tokio_util::sync::CancellationToken,
    refer_answer: Arc<Mutex<ReferAnswer>>,
}

/// How the caller's side answers a REFER: the response code, then (for a
/// 2xx) the NOTIFY sipfrag status it reports.
#[derive(Debug, Clone, Copy)]
pub struct ReferAnswer {
    pub code: u16,
    pub report: u16,
}

impl Drop for SipCaller {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn header<'a>(msg: &'a str, names: &[&str]) -> Option<&'a str> {
    msg.lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            names
                .iter()
                .any(|x| n.trim().eq_ignore_ascii_case(x))
                .then_some(v.trim())
        })
}

fn all_headers<'a>(msg: &'a str, names: &[&str]) -> Vec<&'a str> {
    msg.lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| names.iter().any(|x| n.trim().eq_ignore_ascii_case(x)))
        })
        .collect()
}

fn status_code(msg: &str) -> Option<u16> {
    let first = msg.lines().next()?;
    first
        .strip_prefix("SIP/2.0 ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

fn rms(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    (pcm.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / pcm.len() as f64).sqrt()
}

/// A response to `req` echoing its dialog headers.
fn response_to(req: &str, code: u16, reason: &str, local: SocketAddr) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for h in all_headers(req, &["Via", "v"]) {
        out.push_str(h.trim());
        out.push_str("\r\n");
    }
    for names in [
        &["From", "f"][..],
        &["To", "t"][..],
        &["Call-ID", "i"][..],
        &["CSeq"][..],
    ] {
        if let Some(v) = header(req, names) {
            out.push_str(&format!("{}: {v}\r\n", names[0]));
        }
    }
    out.push_str(&format!(
        "Contact: <sip:caller@{local}>\r\nContent-Length: 0\r\n\r\n"
    ));
    out
}

/// A final answer other than 2xx to a caller's INVITE.
#[derive(Debug, Clone)]
pub struct Refused {
    pub code: u16,
    pub retry_after: Option<String>,
    pub message: String,
}

impl SipCaller {
    /// Dials `number` at `server` offering PCMU, waits for 200 OK (at most
    /// 10 s), ACKs, and starts sending RTP (silence until `say`).
    pub async fn dial(server: SocketAddr, number: &str) -> SipCaller {
        match SipCaller::try_dial(server, number).await {
            Ok(caller) => caller,
            Err(r) => panic!("call refused with {}:\n{}", r.code, r.message),
        }
    }

    /// [`SipCaller::dial`], with a refusal (a final answer ≥ 300, which is
    /// ACKed as RFC 3261 §17.1.1.3 asks) returned instead of a panic.
    pub async fn try_dial(server: SocketAddr, number: &str) -> Result<SipCaller, Refused> {
        SipCaller::try_dial_with(server, number, &[]).await
    }

    /// [`SipCaller::try_dial`] with more headers in the INVITE (`Allow`,
    /// `Supported`, …).
    pub async fn try_dial_with(
        server: SocketAddr,
        number: &str,
        headers: &[(&str, &str)],
    ) -> Result<SipCaller, Refused> {
        let extra: String = headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        let sip = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("sip socket"));
        let rtp = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("rtp socket"));
        let local = sip.local_addr().expect("addr");
        let rtp_port = rtp.local_addr().expect("addr").port();
        let call_id = format!("{}@127.0.0.1", uuid::Uuid::new_v4().simple());
        let from = format!(
            "<sip:+15550007777@{local}>;tag={}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let uri = format!("sip:{number}@{server}");
        let sdp = format!(
            "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        let invite = format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{b};rport\r\n\
             From: {from}\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:caller@{local}>\r\nMax-Forwards: 70\r\n{extra}Content-Type: application/sdp\r\n\
             Content-Length: {len}\r\n\r\n{sdp}",
            b = uuid::Uuid::new_v4().simple(),
            len = sdp.len()
        );
        sip.send_to(invite.as_bytes(), server)
            .await
            .expect("send INVITE");
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(10);
        let ok = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (n, _) = tokio::time::timeout(left, sip.recv_from(&mut buf))
                .await
                .expect("no final answer to the INVITE within 10 s")
                .expect("recv");
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            match status_code(&msg) {
                Some(c) if c < 200 => continue,
                Some(c) if c < 300 => break msg,
                Some(code) => {
                    // The ACK of a refusal: same branch as the INVITE.
                    let via = header(&msg, &["Via", "v"]).unwrap_or_default();
                    let to = header(&msg, &["To", "t"]).unwrap_or_default();
                    let ack = format!(
                        "ACK {uri} SIP/2.0\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to}\r\n\
                         Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n\
                         Content-Length: 0\r\n\r\n"
                    );
                    let _ = sip.send_to(ack.as_bytes(), server).await;
                    return Err(Refused {
                        code,
                        retry_after: header(&msg, &["Retry-After"]).map(str::to_string),
                        message: msg,
                    });
                }
                None => continue,
            }
        };
        let answered_at = Instant::now();
        let to = header(&ok, &["To", "t"]).expect("To").to_string();
        let target = header(&ok, &["Contact", "m"])
            .and_then(|c| {
                let s = c.find('<')?;
                let e = c[s..].find('>')?;
                Some(c[s + 1..s + e].to_string())
            })
            .unwrap_or_else(|| uri.clone());
        let sdp = body(&ok);
        let ip = sdp
            .lines()
            .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))
            .expect("c= line")
            .trim()
            .to_string();
        let port: u16 = sdp
            .lines()
            .find_map(|l| l.trim().strip_prefix("m=audio "))
            .and_then(|m| m.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .expect("m=audio port");
        let remote_rtp: SocketAddr = format!("{ip}:{port}").parse().expect("rtp addr");
        let ack = format!(
            "ACK {target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{b};rport\r\n\
             From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            b = uuid::Uuid::new_v4().simple()
        );
        sip.send_to(ack.as_bytes(), server).await.expect("send ACK");

        let stop = tokio_util::sync::CancellationToken::new();
        let media = Arc::new(Mutex::new(MediaLog::default()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (resp_tx, resp_rx) = mpsc::channel(32);
        let refer_answer = Arc::new(Mutex::new(ReferAnswer {
            code: 202,
            report: 200,
        }));
        tokio::spawn(run_media(rtp, remote_rtp, media.clone(), stop.clone()));
        tokio::spawn(run_sip(
            sip.clone(),
            server,
            SipDialog {
                from: from.clone(),
                to: to.clone(),
                call_id: call_id.clone(),
                target: target.clone(),
                refer_answer: refer_answer.clone(),
            },
            requests.clone(),
            resp_tx,
            stop.clone(),
        ));
        Ok(SipCaller {
            sip,
            server,
            call_id,
            from,
            to,
            target,
            answered_at,
            media,
            requests,
            responses: tokio::sync::Mutex::new(resp_rx),
            stop,
            refer_answer,
        })
    }

    /// Answer the next REFER with `code` and, when it is 2xx, report
    /// `report` (e.g. 503) in the NOTIFY sipfrag.
    pub fn answer_refer_with(&self, code: u16, report: u16) {
        *self.refer_answer.lock().expect("refer answer") = ReferAnswer { code, report };
    }

    /// Dials `number` and waits until the greeting has played (a pause of
    /// 900 ms after agent speech), within 20 s.
    pub async fn dial_after_greeting(server: SocketAddr, number: &str) -> SipCaller {
        let caller = SipCaller::dial(server, number).await;
        caller.wait_greeting().await;
        caller
    }

    /// Waits until the agent's greeting has played (a pause of 900 ms
    /// after it; at most 20 s).
    pub async fn wait_greeting(&self) {
        self.wait_agent_speech(
            self.answered_at,
            Duration::from_millis(900),
            Duration::from_secs(20),
        )
        .await
        .expect("the greeting played within 20 s");
    }

    /// The dialog's Call-ID (`call_logs.sip_call_id` on the node's side).
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Queues 8 kHz speech to send (after anything still queued).
    pub fn say(&self, pcm_8k: &[i16]) {
        self.media
            .lock()
            .expect("media log")
            .mic
            .extend(pcm_8k.iter().copied());
    }

    /// Send time of the first voiced frame the caller sent at or after `after`.
    pub fn first_sent_voice_after(&self, after: Instant) -> Option<Instant> {
        let m = self.media.lock().expect("media log");
        m.sent_voice
            .iter()
            .find(|(at, r)| *at >= after && *r > ONSET_RMS)
            .map(|(at, _)| *at)
    }

    /// Waits until the agent's audio carries voice after `after`; returns
    /// the arrival time of the first voiced packet.
    pub async fn wait_agent_voice(&self, after: Instant, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(at) = self.first_voice_after(after) {
                return Some(at);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// Arrival time and RMS of each packet of agent audio in `[from, to]`.
    pub fn packets_between(&self, from: Instant, to: Instant) -> Vec<(Instant, f64)> {
        let m = self.media.lock().expect("media log");
        m.received
            .iter()
            .filter(|p| p.at >= from && p.at <= to)
            .map(|p| (p.at, p.rms))
            .collect()
    }

    /// Arrival of the first packet of agent audio with any sound in it
    /// (above −50 dBFS) at or after `after`.
    pub fn first_sound_after(&self, after: Instant) -> Option<Instant> {
        let m = self.media.lock().expect("media log");
        m.received
            .iter()
            .find(|p| p.at >= after && p.rms > ONSET_RMS)
            .map(|p| p.at)
    }

    pub fn first_voice_after(&self, after: Instant) -> Option<Instant> {
        let m = self.media.lock().expect("media log");
        m.received
            .iter()
            .find(|p| p.at >= after && p.rms > VOICE_RMS)
            .map(|p| p.at)
    }

    /// The last voiced packet of the agent's audio that starts before
    /// `from` + … : scans forward from `from` and returns the arrival time
    /// of the last voiced packet before the first silence of at least `gap`.
    pub fn voice_end_after(&self, from: Instant, gap: Duration) -> Option<Instant> {
        let m = self.media.lock().expect("media log");
        let mut last_voice: Option<Instant> = None;
        for p in m.received.iter().filter(|p| p.at >= from) {
            if p.rms > VOICE_RMS {
                last_voice = Some(p.at);
            } else if let Some(v) = last_voice {
                if p.at.duration_since(v) >= gap {
                    return Some(v);
                }
            }
        }
        None
    }

    /// Whether the agent's audio carried voice in the 200 ms up to `onset`
    /// (the caller really talked over it).
    pub fn agent_speaking_at(&self, onset: Instant) -> bool {
        self.first_voice_after(onset - Duration::from_millis(200))
            .is_some_and(|t| t <= onset)
    }

    /// Barge-in reaction: ms from `onset` to the agent's last voiced packet
    /// before a silence of at least 400 ms.
    pub fn agent_stop_ms_after(&self, onset: Instant) -> Option<u128> {
        self.voice_end_after(
            onset - Duration::from_millis(200),
            Duration::from_millis(400),
        )
        .map(|stop| stop.saturating_duration_since(onset).as_millis())
    }

    /// Every received packet's PCM, in arrival order (8 kHz).
    pub fn received_pcm(&self, from: Instant, to: Instant) -> Vec<i16> {
        let m = self.media.lock().expect("media log");
        m.received
            .iter()
            .filter(|p| p.at >= from && p.at <= to)
            .flat_map(|p| p.pcm.iter().copied())
            .collect()
    }

    /// Writes what the caller heard between `from` and `to` as an 8 kHz WAV.
    pub fn write_received(&self, path: &Path, from: Instant, to: Instant) {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).expect("wav");
        for s in self.received_pcm(from, to) {
            w.write_sample(s).expect("wav sample");
        }
        w.finalize().expect("wav finalize");
    }

    /// Hangs up (BYE) and waits for its 200 OK (at most 5 s).
    pub async fn hangup(&self) -> bool {
        let local = self.sip.local_addr().expect("addr");
        let bye = format!(
            "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{b};rport\r\n\
             From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 20 BYE\r\nMax-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            target = self.target,
            from = self.from,
            to = self.to,
            call_id = self.call_id,
            b = uuid::Uuid::new_v4().simple()
        );
        self.sip
            .send_to(bye.as_bytes(), self.server)
            .await
            .expect("send BYE");
        let mut rx = self.responses.lock().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if header(&msg, &["CSeq"]).is_some_and(|c| c.contains("BYE")) {
                self.stop.cancel();
                return status_code(&msg) == Some(200);
            }
        }
        self.stop.cancel();
        false
    }

    /// Waits for a request of `method` from the server (at most `timeout`).
    pub async fn wait_request(&self, method: &str, timeout: Duration) -> Option<SeenRequest> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(r) = self.request(method) {
                return Some(r);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn request(&self, method: &str) -> Option<SeenRequest> {
        self.requests
            .lock()
            .expect("requests")
            .iter()
            .find(|r| r.method == method)
            .cloned()
    }

    /// Stops sending and receiving without signalling (the caller vanishes).
    pub fn stop_media(&self) {
        self.stop.cancel();
    }
}

struct SipDialog {
    from: String,
    to: String,
    call_id: String,
    target: String,
    refer_answer: Arc<Mutex<ReferAnswer>>,
}

async fn run_sip(
    sip: Arc<UdpSocket>,
    server: SocketAddr,
    dialog: SipDialog,
    requests: Arc<Mutex<Vec<SeenRequest>>>,
    responses: mpsc::Sender<String>,
    stop: tokio_util::sync::CancellationToken,
) {
    let local = match sip.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut buf = vec![0u8; 65536];
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => {
                // Keep answering a late BYE for a moment after we stopped.
                match tokio::time::timeout(Duration::from_millis(500), sip.recv_from(&mut buf)).await {
                    Ok(Ok((n, _))) => n,
                    _ => return,
                }
            }
            r = sip.recv_from(&mut buf) => match r { Ok((n, _)) => n, Err(_) => return },
        };
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        if msg.starts_with("SIP/2.0") {
            let _ = responses.try_send(msg);
            continue;
        }
        let method = msg
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        requests.lock().expect("requests").push(SeenRequest {
            at: Instant::now(),
            method: method.clone(),
            text: msg.clone(),
        });
        match method.as_str() {
            "ACK" => {}
            "REFER" => {
                let answer = *dialog.refer_answer.lock().expect("refer answer");
                let reason = if answer.code < 300 {
                    "Accepted"
                } else {
                    "Refused"
                };
                let _ = sip
                    .send_to(
                        response_to(&msg, answer.code, reason, local).as_bytes(),
                        server,
                    )
                    .await;
                if answer.code >= 300 {
                    continue;
                }
                let frag = format!("SIP/2.0 {} Report\r\n", answer.report);
                let notify = format!(
                    "NOTIFY {target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{b};rport\r\n\
                     From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 10 NOTIFY\r\n\
                     Contact: <sip:caller@{local}>\r\nMax-Forwards: 70\r\nEvent: refer\r\n\
                     Subscription-State: terminated;reason=noresource\r\n\
                     Content-Type: message/sipfrag\r\nContent-Length: {len}\r\n\r\n{frag}",
                    target = dialog.target,
                    from = dialog.from,
                    to = dialog.to,
                    call_id = dialog.call_id,
                    b = uuid::Uuid::new_v4().simple(),
                    len = frag.len()
                );
                let _ = sip.send_to(notify.as_bytes(), server).await;
            }
            _ => {
                let _ = sip
                    .send_to(response_to(&msg, 200, "OK", local).as_bytes(), server)
                    .await;
                if method == "BYE" {
                    stop.cancel();
                }
            }
        }
    }
}

async fn run_media(
    rtp: Arc<UdpSocket>,
    remote: SocketAddr,
    log: Arc<Mutex<MediaLog>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let ssrc: u32 = rand::random();
    let (mut seq, mut ts): (u16, u32) = (rand::random(), rand::random());
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut buf = vec![0u8; 2048];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let frame: Vec<i16> = {
                    let mut m = log.lock().expect("media log");
                    let n = m.mic.len().min(FRAME);
                    let mut f: Vec<i16> = m.mic.drain(..n).collect();
                    f.resize(FRAME, 0);
                    let r = rms(&f);
                    if r > 0.0 {
                        m.sent_voice.push((Instant::now(), r));
                    }
                    f
                };
                let mut pkt = Vec::with_capacity(12 + FRAME);
                pkt.extend_from_slice(&[0x80, 0]);
                pkt.extend_from_slice(&seq.to_be_bytes());
                pkt.extend_from_slice(&ts.to_be_bytes());
                pkt.extend_from_slice(&ssrc.to_be_bytes());
                pkt.extend(frame.iter().map(|&s| ulaw_encode(s)));
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(FRAME as u32);
                let _ = rtp.send_to(&pkt, remote).await;
            }
            r = rtp.recv_from(&mut buf) => {
                let Ok((n, _)) = r else { return };
                let at = Instant::now();
                let p = &buf[..n];
                if n < 12 || p[0] >> 6 != 2 {
                    continue; // RTCP on a muxed port, or junk
                }
                let pt = p[1] & 0x7f;
                let mut off = 12 + 4 * (p[0] & 0x0f) as usize;
                if p[0] & 0x10 != 0 && n >= off + 4 {
                    off += 4 + 4 * u16::from_be_bytes([p[off + 2], p[off + 3]]) as usize;
                }
                if off > n {
                    continue;
                }
                let pcm: Vec<i16> = match pt {
                    0 => p[off..].iter().map(|&c| ulaw_decode(c)).collect(),
                    8 => p[off..].iter().map(|&c| alaw_decode(c)).collect(),
                    _ => continue,
                };
                let r = rms(&pcm);
                log.lock().expect("media log").received.push(Packet { at, rms: r, pcm });
            }
        }
    }
}

impl SipCaller {
    /// Waits for the agent's first speech after `after` and for its end
    /// (a silence of `gap`); returns (start, end) arrival times.
    pub async fn wait_agent_speech(
        &self,
        after: Instant,
        gap: Duration,
        timeout: Duration,
    ) -> Option<(Instant, Instant)> {
        let deadline = Instant::now() + timeout;
        let start = self
            .wait_agent_voice(after, deadline.saturating_duration_since(Instant::now()))
            .await?;
        while Instant::now() < deadline {
            if let Some(end) = self.voice_end_after(start, gap) {
                return Some((start, end));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Says `pcm_8k` and waits until it has been sent; returns when the
    /// last of it left.
    pub async fn say_and_wait(&self, pcm_8k: &[i16]) -> Instant {
        self.say(pcm_8k);
        let limit = Duration::from_millis(pcm_8k.len() as u64 / 8 + 2000);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.media.lock().expect("media log").mic.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Instant::now()
    }
}
