//! The answer to a new INVITE, in DESIGN.md's order: source/trunk (403,
//! digest 401), dialed number within the admitting trunks' numbers (404),
//! agent and plan (480), trunk capacity (486), codecs and media encryption
//! (488: no common codec, SRTP without a usable key, SRTP where the trunk
//! or the transport does not allow it, plain RTP where it requires SRTP)
//! — or accept.
//! Runs as its own task (it may query the database) and posts the decision
//! back to the SIP core. A trunk with a username and no usable password
//! refuses (403) rather than checking a digest against an empty one;
//! refusals of sources that passed no check are marked untrusted (counted,
//! not logged as calls).

use std::net::IpAddr;
use std::sync::Arc;

use uuid::Uuid;

use super::digest::{DigestRequest, DigestServer, Verdict};
use super::number::{self, NumberingPlan};
use super::routing::{select_route, Router, TrunkSlot, TrunkSlots};
use super::sdp::{self, Negotiated, SessionDescription};
use crate::media::Codec;

/// What routing learned about the call, for its call_logs row.
#[derive(Debug, Clone)]
pub struct RouteFacts {
    pub workspace_id: Uuid,
    pub agent_id: Option<Uuid>,
    pub phone_number_id: Option<Uuid>,
    pub sip_trunk_id: Option<Uuid>,
    /// The caller's number as the admitting trunk vouches for it, and the
    /// number dialed as that trunk's plan reads it, in E.164.
    pub caller: Option<String>,
    pub dialed: Option<String>,
    /// A forwarded call's diverting number (Diversion), in E.164.
    pub diverted_from: Option<String>,
}

/// The caller's number from a trunk that admitted the INVITE: its
/// P-Asserted-Identity, else Remote-Party-ID, else From, read with the
/// trunk's numbering plan. (From a stranger nothing is believed.)
fn caller_number(f: &InviteFacts, plan: &NumberingPlan) -> Option<String> {
    f.asserted
        .iter()
        .chain(std::iter::once(&f.from_uri))
        .find_map(|uri| number::from_uri(uri, plan))
        .map(|e| e.to_string())
}

#[derive(Debug)]
pub enum Decision {
    Reject {
        code: u16,
        reason: &'static str,
        headers: Vec<(String, String)>,
        /// Known when the INVITE got far enough to belong to a workspace
        /// and its source is trusted.
        facts: Option<RouteFacts>,
        /// The source passed a check (a trunk's address list or its
        /// digest): the refusal is a call attempt worth a call_logs row.
        /// Otherwise it is a stranger's, answered within its budget.
        trusted: bool,
    },
    Accept {
        facts: RouteFacts,
        slot: TrunkSlot,
        codecs: Vec<Codec>,
        /// `None` for an offerless INVITE (we offer in the 200).
        offer: Option<(SessionDescription, Negotiated)>,
        /// An offerless INVITE on a trunk that requires SRTP: our offer
        /// in the 200 is RTP/SAVP.
        offer_srtp: bool,
    },
}

/// The facts of the INVITE routing needs (copied out of the message).
#[derive(Debug, Clone)]
pub struct InviteFacts {
    /// The caller's address: the datagram's source, or the address a
    /// trusted proxy vouches for.
    pub source_ip: IpAddr,
    /// The call_logs id the call will have, and its numbers (for the
    /// cluster's count of live calls).
    pub call_log_id: uuid::Uuid,
    pub from_number: String,
    pub to_number: String,
    /// The From URI, and the caller identity a trunk asserted
    /// (P-Asserted-Identity, else Remote-Party-ID), as URIs.
    pub from_uri: String,
    pub asserted: Option<String>,
    /// The first Diversion header's URI (a forwarded call).
    pub diversion: Option<String>,
    pub request_uri: String,
    pub to_uri: String,
    pub authorization: Option<String>,
    pub sdp: Option<Vec<u8>>,
    pub now_unix: u64,
    /// The INVITE came over an encrypted transport (TLS, WSS): only then
    /// may SDP carry SRTP keys.
    pub secure: bool,
}

pub struct Decider {
    pub router: Arc<Router>,
    pub slots: TrunkSlots,
    pub digest: DigestServer,
    /// In a cluster, a trunk's calls are counted over every node.
    pub cluster: Option<Arc<crate::db::cluster::Cluster>>,
}

/// 488 with a Warning (RFC 3261 §20.43) that says why.
fn not_acceptable(warning: &str, facts: RouteFacts) -> Decision {
    Decision::Reject {
        code: 488,
        reason: "Not Acceptable Here",
        headers: vec![("Warning".into(), format!("304 switchboard \"{warning}\""))],
        facts: Some(facts),
        trusted: true,
    }
}

fn reject(code: u16, reason: &'static str, facts: Option<RouteFacts>) -> Decision {
    Decision::Reject {
        code,
        reason,
        headers: Vec::new(),
        facts,
        trusted: true,
    }
}

/// A refusal of a source that passed no check: no row, no workspace.
fn refuse_stranger(code: u16, reason: &'static str) -> Decision {
    Decision::Reject {
        code,
        reason,
        headers: Vec::new(),
        facts: None,
        trusted: false,
    }
}

impl Decider {
    pub async fn decide(&self, f: InviteFacts) -> Decision {
        match self.try_decide(f).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("routing lookup failed: {e}");
                Decision::Reject {
                    code: 503,
                    reason: "Service Unavailable",
                    headers: vec![("Retry-After".into(), "5".into())],
                    facts: None,
                    trusted: true,
                }
            }
        }
    }

    async fn try_decide(&self, f: InviteFacts) -> Result<Decision, sqlx::Error> {
        let trunks = self.router.trunks().await?;
        // A trunk admits a source by CIDR; a trunk with credentials and no
        // CIDRs admits any source that passes digest.
        let allowed: Vec<_> = trunks
            .iter()
            .filter(|t| t.allows_source(f.source_ip) || (t.cidrs.is_empty() && t.has_credentials()))
            .collect();
        if allowed.is_empty() {
            return Ok(refuse_stranger(403, "Forbidden"));
        }
        // Admitted by address, not merely allowed to try a password.
        let listed = allowed.iter().any(|t| t.allows_source(f.source_ip));
        // Each admitting trunk reads the dialed number with its own plan
        // (a national "02079460000" is British on a UK trunk).
        let mut plans: Vec<&NumberingPlan> = Vec::new();
        for t in &allowed {
            if !plans.contains(&&t.plan) {
                plans.push(&t.plan);
            }
        }
        let mut found = None;
        for plan in plans {
            let dialed = number::from_uri(&f.request_uri, plan)
                .or_else(|| number::from_uri(&f.to_uri, plan));
            let Some(e164) = dialed else { continue };
            let routes = self.router.numbers(&e164).await?;
            let same_plan: Vec<_> = allowed
                .iter()
                .copied()
                .filter(|t| &t.plan == plan)
                .collect();
            if let Some((route, trunk)) = select_route(&same_plan, routes.as_slice()) {
                found = Some((route.clone(), trunk, e164));
                break;
            }
        }
        // The number within the trunks that admitted this INVITE: another
        // workspace's number is "not found" here, never its agent.
        let Some((route, trunk, dialed)) = found else {
            if !listed {
                return Ok(refuse_stranger(404, "Not Found"));
            }
            let admitted: Vec<_> = allowed
                .iter()
                .filter(|t| t.allows_source(f.source_ip))
                .collect();
            let ws = admitted[0].workspace_id;
            let single = admitted.iter().all(|t| t.workspace_id == ws);
            let facts = single.then(|| RouteFacts {
                workspace_id: ws,
                agent_id: None,
                phone_number_id: None,
                sip_trunk_id: (admitted.len() == 1).then(|| admitted[0].id),
                caller: None,
                dialed: None,
                diverted_from: None,
            });
            return Ok(reject(404, "Not Found", facts));
        };
        let listed = trunk.allows_source(f.source_ip);
        let facts = RouteFacts {
            workspace_id: route.workspace_id,
            agent_id: route.agent_id,
            phone_number_id: Some(route.id),
            sip_trunk_id: Some(trunk.id),
            caller: caller_number(&f, &trunk.plan),
            dialed: Some(dialed.to_string()),
            diverted_from: f
                .diversion
                .as_deref()
                .and_then(|uri| number::from_uri(uri, &trunk.plan))
                .map(|e| e.to_string()),
        };
        if trunk.has_credentials() {
            let username = trunk.username.as_deref().unwrap_or_default();
            // Fail closed: no password, an empty one or one that could not
            // be decrypted is a broken trunk, never an open one.
            let Some(password) = trunk.password.as_deref().filter(|p| !p.is_empty()) else {
                tracing::warn!(trunk = %trunk.id, "trunk has a username but no usable password; refusing");
                return Ok(if listed {
                    reject(403, "Forbidden", Some(facts))
                } else {
                    refuse_stranger(403, "Forbidden")
                });
            };
            let request = DigestRequest {
                method: "INVITE",
                request_uri: &f.request_uri,
                source: f.source_ip,
            };
            let verdict = f.authorization.as_deref().map(|a| {
                self.digest
                    .verify(a, request, username, password, f.now_unix)
            });
            match verdict {
                Some(Verdict::Valid) => {}
                Some(Verdict::Invalid) if listed => {
                    return Ok(reject(403, "Forbidden", Some(facts)))
                }
                Some(Verdict::Invalid) => return Ok(refuse_stranger(403, "Forbidden")),
                stale_replayed_or_missing => {
                    let stale = stale_replayed_or_missing == Some(Verdict::Stale);
                    let headers = self
                        .digest
                        .challenges(f.now_unix, f.source_ip, stale)
                        .into_iter()
                        .map(|c| ("WWW-Authenticate".to_string(), c))
                        .collect();
                    // A challenge is not a call attempt yet: no row.
                    return Ok(Decision::Reject {
                        code: 401,
                        reason: "Unauthorized",
                        headers,
                        facts: None,
                        trusted: listed,
                    });
                }
            }
        }
        if route.agent_id.is_none() || !route.agent_live {
            return Ok(reject(480, "Temporarily Unavailable", Some(facts)));
        }
        if !self.router.usage_allows(route.workspace_id).await? {
            return Ok(reject(480, "Temporarily Unavailable", Some(facts)));
        }
        let offer = match &f.sdp {
            Some(body) => {
                let parsed = match sdp::parse(body) {
                    Ok(p) => p,
                    Err(_) => return Ok(reject(488, "Not Acceptable Here", Some(facts))),
                };
                match sdp::negotiate(&parsed, &trunk.codecs) {
                    Ok(n) => {
                        if let Err(why) = trunk.srtp.check(n.srtp.is_some(), f.secure) {
                            return Ok(not_acceptable(why, facts));
                        }
                        Some((parsed, n))
                    }
                    Err(sdp::SdpError::NoUsableCrypto) => {
                        return Ok(not_acceptable(
                            "SRTP needs an a=crypto line with AES_CM_128_HMAC_SHA1_80",
                            facts,
                        ))
                    }
                    Err(_) => return Ok(not_acceptable("Media type not available", facts)),
                }
            }
            None => None,
        };
        // Offerless: our offer in the 200 is SRTP only when the trunk
        // requires it, which needs TLS.
        let offer_srtp = offer.is_none() && trunk.srtp == super::sdes::SrtpPolicy::Required;
        if offer_srtp && !f.secure {
            return Ok(not_acceptable(
                "this trunk requires SRTP (RTP/SAVP over TLS)",
                facts,
            ));
        }
        let Some(mut slot) = self.slots.try_acquire(trunk.id, trunk.max_concurrent_calls) else {
            return Ok(reject(486, "Busy Here", Some(facts)));
        };
        if let Some(cluster) = &self.cluster {
            let claimed = cluster
                .claim(
                    f.call_log_id,
                    route.workspace_id,
                    trunk.id,
                    route.agent_id,
                    &f.from_number,
                    &f.to_number,
                    trunk.max_concurrent_calls,
                )
                .await;
            match claimed {
                Ok(true) => slot.held_in_cluster(cluster.clone(), f.call_log_id),
                Ok(false) => return Ok(reject(486, "Busy Here", Some(facts))),
                // The node's own count still holds; the call is not lost
                // to an outage of the shared count.
                Err(e) => tracing::warn!(
                    trunk = %trunk.id,
                    "cluster count unavailable, counting this node's calls only: {e}"
                ),
            }
        }
        Ok(Decision::Accept {
            facts,
            slot,
            codecs: trunk.codecs.clone(),
            offer,
            offer_srtp,
        })
    }
}

/// call_logs status for a refusal code.
pub fn status_for(code: u16) -> &'static str {
    match code {
        486 | 600 => "busy",
        487 => "no_answer",
        500..=599 => "failed",
        _ => "rejected",
    }
}
