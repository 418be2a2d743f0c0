//! A transfer's progress as the transferor sees it (RFC 3515), sans-IO — a
//! blind transfer's, and a warm transfer's completion with Replaces
//! (`replaces.rs`):
//! the answer to our REFER, then the NOTIFY `message/sipfrag` reports of
//! the implicit subscription (`SIP/2.0 100 Trying`, `180 Ringing`, then a
//! final status), each awaited against a deadline. It decides only the
//! outcome; the SIP core sends the REFER, answers the NOTIFYs and ends the
//! call (BYE) when the transfer succeeded.
//!
//! Carriers differ: some send no provisional report, some end the
//! subscription without a final one, some refuse REFER outright (403, 603,
//! 405, 501). Every way it can go wrong ends in `Failed` — never in a call
//! left waiting forever — so the agent can say so and carry on.

use std::time::{Duration, Instant};

/// How long to wait at each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferTimers {
    /// From the REFER (and from its 2xx) to the first NOTIFY report.
    pub notify: Duration,
    /// After a provisional report (the target is trying or ringing) to the
    /// final one: about the time a carrier lets a number ring.
    pub ringing: Duration,
}

/// Why a transfer did not happen (`call_logs.transfer_outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferFailure {
    /// The far end refused the REFER itself (403, 405, 501, 603...).
    Refused,
    /// The far end tried the target and reported a failure (sipfrag ≥ 300).
    TargetFailed,
    /// No answer or report came in time, or the subscription ended
    /// without a final report.
    NoReport,
}

/// How a transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferOutcome {
    /// The target answered (sipfrag 2xx): the caller is theirs now.
    Transferred { sip_code: u16 },
    /// `sip_code`: the refusal, the reported failure, or 408 for a timeout.
    Failed { why: TransferFailure, sip_code: u16 },
}

impl TransferOutcome {
    pub fn accepted(self) -> bool {
        matches!(self, TransferOutcome::Transferred { .. })
    }

    pub fn sip_code(self) -> u16 {
        match self {
            TransferOutcome::Transferred { sip_code }
            | TransferOutcome::Failed { sip_code, .. } => sip_code,
        }
    }

    /// `call_logs.transfer_outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferOutcome::Transferred { .. } => "transferred",
            TransferOutcome::Failed { why, .. } => match why {
                TransferFailure::Refused => "refused",
                TransferFailure::TargetFailed => "failed",
                TransferFailure::NoReport => "timeout",
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// REFER sent, no final answer yet (its transaction times out on its own).
    Sent,
    /// REFER accepted (or a report already came): waiting for reports.
    Reporting,
    Done(TransferOutcome),
}

/// A call's transfer under way: where to, and how far it got.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The target exactly as configured (the `Refer-To` URI's source); for
    /// a warm transfer's completion, the `Refer-To` sent.
    pub target: String,
    pub progress: ReferProgress,
    /// A warm transfer's completion (RFC 5589 §7): the caller's phone is
    /// asked to replace the node's call with the person; `None` for a
    /// blind transfer.
    pub replacing: Option<super::replaces::Replacing>,
}

/// One REFER's progress.
#[derive(Debug, Clone)]
pub struct ReferProgress {
    timers: ReferTimers,
    step: Step,
    deadline: Instant,
    /// The last provisional status reported (100, 180, 183).
    progress: Option<u16>,
}

impl ReferProgress {
    /// The REFER goes out now.
    pub fn start(timers: ReferTimers, now: Instant) -> ReferProgress {
        ReferProgress {
            timers,
            step: Step::Sent,
            deadline: now + timers.notify,
            progress: None,
        }
    }

    /// The outcome once decided.
    pub fn outcome(&self) -> Option<TransferOutcome> {
        match self.step {
            Step::Done(o) => Some(o),
            _ => None,
        }
    }

    /// The far end took the REFER (a 2xx or a report came) and no outcome
    /// is decided yet.
    pub fn under_way(&self) -> bool {
        matches!(self.step, Step::Reporting)
    }

    /// The last provisional status the far end reported.
    pub fn progress(&self) -> Option<u16> {
        self.progress
    }

    /// When `on_timer` must run; `None` once decided.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.outcome().is_none().then_some(self.deadline)
    }

    /// A final answer to the REFER (provisionals are not passed here).
    pub fn on_refer_response(&mut self, code: u16, now: Instant) {
        match (self.step, code) {
            (Step::Sent, 200..=299) => {
                self.step = Step::Reporting;
                self.deadline = now + self.timers.notify;
            }
            // A NOTIFY may overtake the 202 (RFC 3515 §2.4.4); the report wins.
            (Step::Reporting, 200..=299) => {}
            (Step::Sent | Step::Reporting, 300..=699) => self.done(TransferOutcome::Failed {
                why: TransferFailure::Refused,
                sip_code: code,
            }),
            _ => {}
        }
    }

    /// The REFER's transaction timed out (Timer F): nobody answered it.
    pub fn on_refer_timeout(&mut self) {
        if matches!(self.step, Step::Sent) {
            self.done(TransferOutcome::Failed {
                why: TransferFailure::NoReport,
                sip_code: 408,
            });
        }
    }

    /// A NOTIFY of the refer subscription: its sipfrag body and its
    /// `Subscription-State` header.
    pub fn on_notify(&mut self, body: &[u8], subscription_state: Option<&str>, now: Instant) {
        if matches!(self.step, Step::Done(_)) {
            return;
        }
        match sipfrag_status(body) {
            Some(code @ 100..=199) => {
                self.step = Step::Reporting;
                self.progress = Some(code);
                self.deadline = now + self.timers.ringing;
            }
            Some(code @ 200..=299) => {
                return self.done(TransferOutcome::Transferred { sip_code: code })
            }
            Some(code) => {
                return self.done(TransferOutcome::Failed {
                    why: TransferFailure::TargetFailed,
                    sip_code: code,
                })
            }
            // A report we cannot read still shows the subscription lives.
            None => self.step = Step::Reporting,
        }
        let terminated = subscription_state
            .is_some_and(|s| s.trim().to_ascii_lowercase().starts_with("terminated"));
        if terminated {
            self.done(TransferOutcome::Failed {
                why: TransferFailure::NoReport,
                sip_code: 487,
            });
        }
    }

    pub fn on_timer(&mut self, now: Instant) {
        if self.outcome().is_none() && now >= self.deadline {
            self.done(TransferOutcome::Failed {
                why: TransferFailure::NoReport,
                sip_code: 408,
            });
        }
    }

    fn done(&mut self, outcome: TransferOutcome) {
        self.step = Step::Done(outcome);
    }
}

/// The status code of a `message/sipfrag` status line (`SIP/2.0 180
/// Ringing`), when the body starts with one.
pub fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let head = &body[..body.len().min(256)];
    let text = std::str::from_utf8(head).ok()?;
    let line = text.trim_start().lines().next()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.eq_ignore_ascii_case("SIP/2.0") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse::<u16>().ok().filter(|c| (100..700).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMERS: ReferTimers = ReferTimers {
        notify: Duration::from_secs(32),
        ringing: Duration::from_secs(45),
    };

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn accepted_then_trying_ringing_ok_is_a_transfer() {
        let t0 = Instant::now();
        let mut p = ReferProgress::start(TIMERS, t0);
        assert!(!p.under_way(), "sent, not yet taken");
        p.on_refer_response(202, at(t0, 40));
        assert!(p.under_way());
        p.on_notify(
            b"SIP/2.0 100 Trying\r\n",
            Some("active;expires=60"),
            at(t0, 50),
        );
        assert_eq!(p.progress(), Some(100));
        p.on_notify(b"SIP/2.0 180 Ringing\r\n", Some("active"), at(t0, 2_000));
        assert_eq!(p.progress(), Some(180));
        // Ringing longer than the first-report wait is fine.
        p.on_timer(at(t0, 40_000));
        assert_eq!(p.outcome(), None);
        assert_eq!(p.next_deadline(), Some(at(t0, 47_000)));
        p.on_notify(
            b"SIP/2.0 200 OK\r\n",
            Some("terminated;reason=noresource"),
            at(t0, 41_000),
        );
        assert_eq!(
            p.outcome(),
            Some(TransferOutcome::Transferred { sip_code: 200 })
        );
        assert_eq!(p.next_deadline(), None);
        assert!(!p.under_way(), "decided");
        assert_eq!(p.outcome().unwrap().as_str(), "transferred");
    }

    #[test]
    fn a_refused_refer_fails_at_once() {
        for code in [403, 405, 501, 603] {
            let t0 = Instant::now();
            let mut p = ReferProgress::start(TIMERS, t0);
            p.on_refer_response(code, at(t0, 30));
            let o = p.outcome().expect("decided");
            assert!(!o.accepted());
            assert_eq!(o.sip_code(), code);
            assert_eq!(o.as_str(), "refused");
        }
    }

    #[test]
    fn a_failure_report_fails_with_its_code() {
        let t0 = Instant::now();
        let mut p = ReferProgress::start(TIMERS, t0);
        p.on_refer_response(202, at(t0, 10));
        p.on_notify(b"SIP/2.0 100 Trying", None, at(t0, 20));
        p.on_notify(
            b"SIP/2.0 503 Service Unavailable\r\n",
            Some("terminated"),
            at(t0, 900),
        );
        assert_eq!(
            p.outcome(),
            Some(TransferOutcome::Failed {
                why: TransferFailure::TargetFailed,
                sip_code: 503
            })
        );
        // Later reports change nothing.
        p.on_notify(b"SIP/2.0 200 OK", None, at(t0, 1_000));
        assert_eq!(p.outcome().unwrap().sip_code(), 503);
    }

    #[test]
    fn silence_after_the_202_times_out() {
        let t0 = Instant::now();
        let mut p = ReferProgress::start(TIMERS, t0);
        p.on_refer_response(202, at(t0, 100));
        p.on_timer(at(t0, 32_099));
        assert_eq!(p.outcome(), None);
        p.on_timer(at(t0, 32_100));
        assert_eq!(p.outcome().unwrap().as_str(), "timeout");
        assert_eq!(p.outcome().unwrap().sip_code(), 408);
    }

    #[test]
    fn an_unanswered_refer_and_a_stalled_ringing_time_out() {
        let t0 = Instant::now();
        let mut p = ReferProgress::start(TIMERS, t0);
        p.on_refer_timeout();
        assert_eq!(p.outcome().unwrap().as_str(), "timeout");

        let mut p = ReferProgress::start(TIMERS, t0);
        p.on_notify(b"SIP/2.0 180 Ringing", Some("active"), at(t0, 5));
        // The 202 arrives after the report it announced: still reporting.
        p.on_refer_response(202, at(t0, 10));
        p.on_timer(at(t0, 45_004));
        assert_eq!(p.outcome(), None);
        p.on_timer(at(t0, 45_005));
        assert_eq!(p.outcome().unwrap().as_str(), "timeout");
    }

    #[test]
    fn a_subscription_ended_without_a_final_report_fails() {
        let t0 = Instant::now();
        let mut p = ReferProgress::start(TIMERS, t0);
        p.on_refer_response(202, at(t0, 10));
        p.on_notify(
            b"SIP/2.0 100 Trying",
            Some("terminated;reason=timeout"),
            at(t0, 20),
        );
        assert_eq!(p.outcome().unwrap().as_str(), "timeout");
    }

    #[test]
    fn sipfrag_status_lines() {
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK\r\n"), Some(200));
        assert_eq!(sipfrag_status(b"\r\n  sip/2.0 180 Ringing"), Some(180));
        assert_eq!(
            sipfrag_status(b"SIP/2.0 603 Decline\r\nReason: x\r\n"),
            Some(603)
        );
        for bad in [
            &b""[..],
            b"SIP/2.0",
            b"SIP/2.0 20 OK",
            b"SIP/2.0 2000 OK",
            b"SIP/2.0 099 X",
            b"INVITE sip:a@b SIP/2.0",
            b"\xff\xfe",
        ] {
            assert_eq!(sipfrag_status(bad), None, "{bad:?}");
        }
    }
}
