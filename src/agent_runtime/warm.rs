//! Warm transfer, the I/O half (the call machine decides when): the node
//! calls the person at `transfer_to` through the call's trunk, tells them
//! who is calling and why (the caller's own words so far), then bridges
//! the caller to them — relaying each leg's decoded 16 kHz audio into the
//! other's playout, so the two legs' codecs may differ. With
//! `sip.warm_transfer_replaces`, the caller's leg is then asked to complete
//! the transfer (REFER with Replaces, RFC 5589 §7, decided and followed in
//! the SIP core): where both phones can, they take the call over between
//! themselves and both legs end; otherwise the node relays until one side
//! hangs up.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use uuid::Uuid;

use super::leg::{CallLeg, LegEvent, LegInfo, LegSetup, SipLegSetup};
use super::profile::AgentProfile;
use super::tts::TextToSpeech;
use super::Runtime;
use crate::domain::CallDirection;
use crate::media::Codec;
use crate::sip::number::E164;
use crate::sip::outbound_leg::{ConsultFailure, DialRequest};
use crate::sip::transport::Transport;

/// The briefing must have played within this long after the answer.
const BRIEFING_LIMIT: Duration = Duration::from_secs(60);
/// Audio queued toward a leg beyond this is dropped: the bridge keeps its
/// delay bounded when one side's clock runs fast.
const MAX_BRIDGE_QUEUE_MS: u64 = 200;

/// The person reached and briefed, ready to bridge.
pub struct Consulted {
    pub leg: Box<dyn CallLeg>,
    /// The person's call (its call_logs row).
    pub call_log_id: Uuid,
}

/// Why a warm transfer did not reach the person, for call_logs
/// (`transfer_outcome`: busy, no_answer, failed) and the logs.
#[derive(Debug, Clone)]
pub struct NotReached {
    pub outcome: &'static str,
    pub sip_code: Option<u16>,
    pub reason: String,
}

impl NotReached {
    fn failed(reason: impl Into<String>) -> NotReached {
        NotReached {
            outcome: "failed",
            sip_code: None,
            reason: reason.into(),
        }
    }
}

/// The number a warm transfer dials: `transfer_to` as E.164 or a `tel:`
/// URI of one. A `sip:` target has no number to dial through a trunk.
pub fn dial_target(target: &str) -> Option<E164> {
    let number = target.strip_prefix("tel:").unwrap_or(target);
    let number = number.split(';').next().unwrap_or(number);
    E164::parse(number).ok()
}

/// What the person hears first.
pub fn briefing(profile: &AgentProfile, caller: &str, summary: &str) -> String {
    let who = if profile.persona_name.is_empty() {
        profile.agent_name.as_str()
    } else {
        profile.persona_name.as_str()
    };
    let mut text = format!("Hello, this is {who}. I have a caller on the line from {caller}.");
    if !summary.is_empty() {
        text.push_str(&format!(" They said: {summary}"));
        if !summary.ends_with(['.', '?', '!']) {
            text.push('.');
        }
    }
    text.push_str(" I am connecting you now.");
    text
}

/// Calls the person and briefs them; the caller's leg is untouched.
pub async fn consult(
    rt: Arc<Runtime>,
    info: LegInfo,
    profile: Arc<AgentProfile>,
    tts: Arc<dyn TextToSpeech>,
    target: String,
    summary: String,
) -> Result<Consulted, NotReached> {
    let request = consult_request(&rt, &info, &target).await?;
    let sip = rt
        .sip
        .get()
        .ok_or_else(|| NotReached::failed("no SIP service to dial from"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    sip.dial_for(request, Some(tx))
        .await
        .map_err(|e| NotReached::failed(e.to_string()))?;
    // The dial machine ends the ringing at sip.ring_timeout_secs itself.
    let limit = Duration::from_secs(rt.config.sip.ring_timeout_secs + 30);
    let call = match tokio::time::timeout(limit, rx).await {
        Ok(Ok(Ok(call))) => call,
        Ok(Ok(Err(ConsultFailure { status, sip_code }))) => {
            return Err(NotReached {
                outcome: match status {
                    "busy" => "busy",
                    "no_answer" => "no_answer",
                    _ => "failed",
                },
                sip_code,
                reason: format!("the person's line answered {status}"),
            })
        }
        _ => return Err(NotReached::failed("the call to the person was lost")),
    };
    let call_log_id = call.call_log_id;
    let mut leg = Box::new(SipLegSetup::new(call))
        .start(None)
        .map_err(NotReached::failed)?;
    let text = briefing(&profile, info.caller(), &summary);
    tracing::info!(%text, "briefing the person");
    match tokio::time::timeout(BRIEFING_LIMIT, say(&mut leg, &*tts, &profile, &text)).await {
        Ok(Ok(())) => Ok(Consulted { leg, call_log_id }),
        Ok(Err(why)) => {
            leg.hang_up(crate::records::HangupBy::Agent, why.clone())
                .await;
            leg.close().await;
            Err(NotReached::failed(why))
        }
        Err(_) => {
            leg.hang_up(
                crate::records::HangupBy::Agent,
                "briefing took too long".into(),
            )
            .await;
            leg.close().await;
            Err(NotReached::failed("briefing took too long"))
        }
    }
}

/// Speaks `text` on `leg` and waits until it has played.
async fn say(
    leg: &mut Box<dyn CallLeg>,
    tts: &dyn TextToSpeech,
    profile: &AgentProfile,
    text: &str,
) -> Result<(), String> {
    const BRIEFING_UTT: u64 = 1;
    let mut stream = tts
        .synthesize(text, &profile.tts_voice, profile.tts_speed)
        .await
        .map_err(|e| e.to_string())?;
    let playout = leg.playout();
    let (mut pcm, mut rate) = (Vec::new(), 0);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        rate = chunk.sample_rate;
        pcm.extend_from_slice(&chunk.pcm);
    }
    playout
        .play(BRIEFING_UTT, pcm, rate)
        .map_err(|e| e.to_string())?;
    loop {
        match leg.next_event().await {
            Some(LegEvent::PlayoutFinished { id }) if id == BRIEFING_UTT => return Ok(()),
            Some(LegEvent::Ended { reason, .. }) => {
                return Err(format!("the person hung up: {reason}"))
            }
            None => return Err("the person's leg ended".into()),
            Some(_) => {}
        }
    }
}

/// Which side of a bridge hung up first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Caller,
    Person,
}

/// Relays audio both ways until one side's leg ends.
pub async fn bridge(caller: &mut Box<dyn CallLeg>, person: &mut Box<dyn CallLeg>) -> Side {
    let (to_caller, to_person) = (caller.playout(), person.playout());
    let mut next_id: u64 = 1 << 40;
    loop {
        tokio::select! {
            ev = caller.next_event() => match ev {
                Some(LegEvent::Audio(frame)) => {
                    next_id += 1;
                    if to_person.queued_ms() <= MAX_BRIDGE_QUEUE_MS {
                        let _ = to_person.play(next_id, frame, 16_000);
                    }
                }
                Some(LegEvent::Ended { .. }) | None => return Side::Caller,
                Some(_) => {}
            },
            ev = person.next_event() => match ev {
                Some(LegEvent::Audio(frame)) => {
                    next_id += 1;
                    if to_caller.queued_ms() <= MAX_BRIDGE_QUEUE_MS {
                        let _ = to_caller.play(next_id, frame, 16_000);
                    }
                }
                Some(LegEvent::Ended { .. }) | None => return Side::Person,
                Some(_) => {}
            },
        }
    }
}

#[derive(sqlx::FromRow)]
struct TrunkRow {
    id: Uuid,
    outbound_host: String,
    outbound_port: Option<i32>,
    outbound_transport: String,
    outbound_username: Option<String>,
    outbound_password: Option<String>,
    from_domain: Option<String>,
    codecs: Vec<String>,
    max_concurrent_calls: i32,
    srtp: String,
}

/// The call to the person: through the trunk the call came in on (or went
/// out on) when it can place calls, else the workspace's only trunk that
/// can; from the number the caller reached (or that we called from).
async fn consult_request(
    rt: &Runtime,
    info: &LegInfo,
    target: &str,
) -> Result<DialRequest, NotReached> {
    let to = dial_target(target)
        .ok_or_else(|| NotReached::failed("a warm transfer needs an E.164 or tel: transfer_to"))?;
    let ours = match info.direction {
        CallDirection::Outbound => &info.from_number,
        _ => &info.to_number,
    };
    let from = E164::parse(ours)
        .map_err(|_| NotReached::failed(format!("the call's number {ours:?} is not E.164")))?;
    let db = |e: sqlx::Error| NotReached::failed(format!("database: {e}"));
    let call_trunk: Option<Uuid> =
        sqlx::query_scalar("select sip_trunk_id from call_logs where id = $1")
            .bind(info.call_log_id)
            .fetch_optional(&rt.pool)
            .await
            .map_err(db)?
            .flatten();
    let mut trunks: Vec<TrunkRow> = sqlx::query_as(
        "select id, outbound_host, outbound_port, outbound_transport, outbound_username, outbound_password, \
                from_domain, codecs, max_concurrent_calls, srtp \
         from sip_trunks where workspace_id = $1 and enabled and direction in ('outbound', 'both') \
               and coalesce(outbound_host, '') <> '' \
         order by (id = $2) desc, created_at, id",
    )
    .bind(info.workspace_id)
    .bind(call_trunk)
    .fetch_all(&rt.pool)
    .await
    .map_err(db)?;
    let usable = trunks.len();
    let trunk = match trunks.first() {
        Some(t) if Some(t.id) == call_trunk || usable == 1 => trunks.remove(0),
        _ => {
            return Err(NotReached::failed(format!(
                "no trunk to dial the person through ({usable} outbound trunks, none the call's)"
            )))
        }
    };
    let transport = match trunk.outbound_transport.as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        _ => Transport::Tls,
    };
    let port = trunk
        .outbound_port
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(5060);
    let host = trunk.outbound_host.clone();
    let addr = resolve(&host, port, &rt.config.outbound.allowed()).await?;
    let credentials = match (&trunk.outbound_username, &trunk.outbound_password) {
        (Some(u), Some(pw)) if !u.is_empty() => {
            let key = rt.config.encryption_key_bytes();
            let pw = crate::sip::routing::decrypt_secret(&key, pw)
                .ok_or_else(|| NotReached::failed("the trunk's outbound_password is unreadable"))?;
            Some((u.clone(), pw))
        }
        _ => None,
    };
    Ok(DialRequest {
        workspace_id: info.workspace_id,
        agent_id: info.agent_id,
        sip_trunk_id: trunk.id,
        from,
        phone_number_id: None,
        to,
        target: addr,
        transport,
        host,
        port,
        from_domain: trunk.from_domain.filter(|d| !d.is_empty()),
        credentials,
        codecs: trunk
            .codecs
            .iter()
            .filter_map(|c| Codec::from_name(c))
            .filter(|c| matches!(c, Codec::Pcmu | Codec::Pcma | Codec::Opus))
            .collect(),
        srtp: trunk.srtp == "required" && transport == Transport::Tls,
        max_concurrent_calls: trunk.max_concurrent_calls.max(0) as usize,
        variables: Vec::new(),
    })
}

/// The trunk's address, under the operator's outbound rules (private
/// ranges only when allowed), bounded in time.
async fn resolve(
    host: &str,
    port: u16,
    allowed: &crate::outbound::Allowed,
) -> Result<SocketAddr, NotReached> {
    let literal = host.trim_matches(['[', ']']).parse::<IpAddr>().ok();
    let addrs: Vec<SocketAddr> = match literal {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => {
            match tokio::time::timeout(
                Duration::from_secs(3),
                tokio::net::lookup_host((host, port)),
            )
            .await
            {
                Ok(Ok(found)) => found.take(16).collect(),
                _ => Vec::new(),
            }
        }
    };
    let by_name = literal.is_none() && allowed.permits_host(host);
    match addrs.first() {
        Some(first) if by_name || addrs.iter().all(|a| allowed.permits(a.ip())) => Ok(addrs
            .iter()
            .find(|a| a.is_ipv4())
            .copied()
            .unwrap_or(*first)),
        Some(_) => Err(NotReached::failed(format!(
            "the trunk's outbound_host {}",
            crate::outbound::REFUSED
        ))),
        None => Err(NotReached::failed(
            "the trunk's outbound_host does not resolve",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_a_trunk_can_dial() {
        assert_eq!(
            dial_target("+15555550199").unwrap().as_str(),
            "+15555550199"
        );
        assert_eq!(
            dial_target("tel:+15555550199;ext=1").unwrap().as_str(),
            "+15555550199"
        );
        assert!(dial_target("sip:desk@pbx.example.com").is_none());
        assert!(dial_target("tel:5550199").is_none());
    }
}
