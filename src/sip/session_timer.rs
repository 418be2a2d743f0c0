//! Session timers (RFC 4028), sans-IO: what the headers of an INVITE or a
//! 2xx ask for, the answer a UAS gives (the interval, who refreshes, or
//! 422 with our Min-SE), and the running timer of one dialog, which says
//! when to send a refresh (UPDATE, at half the interval, when we are the
//! refresher) and when to give up on a far end that never refreshes (BYE at
//! the interval less min(32 s, a third of it), §10). Time is an argument;
//! the SIP core sends what it is told and schedules `next_wake`.

use std::time::{Duration, Instant};

use super::message::Message;

/// RFC 4028 §4: no Min-SE may be below 90 s.
pub const MIN_SE_FLOOR: u32 = 90;
/// Longest interval we run (a day): a larger one is taken as this.
const MAX_INTERVAL: u32 = 86_400;

/// The node's own settings (`sip.session_expires_secs`, `sip.min_se_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerSettings {
    /// The interval we ask for, or grant a caller that supports timers and
    /// asked for none; 0: only when the caller asks.
    pub session_expires: u32,
    /// The smallest interval we accept.
    pub min_se: u32,
}

impl Default for TimerSettings {
    fn default() -> Self {
        TimerSettings {
            session_expires: 1800,
            min_se: MIN_SE_FLOOR,
        }
    }
}

/// Which side of the dialog-creating transaction refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

impl Refresher {
    pub fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// What a message says about session timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimerHeaders {
    pub session_expires: Option<u32>,
    pub refresher: Option<Refresher>,
    pub min_se: Option<u32>,
    /// `Supported: timer` or `Require: timer` (compact `k:` too).
    pub supported: bool,
    /// The sender allows UPDATE (its `Allow` lists it).
    pub allows_update: bool,
}

fn delta_seconds(v: &str) -> Option<u32> {
    let n: u64 = v.split(';').next()?.trim().parse().ok()?;
    Some(n.min(u64::from(MAX_INTERVAL)) as u32)
}

impl TimerHeaders {
    pub fn read(msg: &Message) -> TimerHeaders {
        let se = msg.header("Session-Expires").or_else(|| msg.header("x"));
        let refresher = se.and_then(|v| {
            v.split(';').skip(1).find_map(|p| {
                let (k, val) = p.split_once('=')?;
                if !k.trim().eq_ignore_ascii_case("refresher") {
                    return None;
                }
                match val.trim().to_ascii_lowercase().as_str() {
                    "uac" => Some(Refresher::Uac),
                    "uas" => Some(Refresher::Uas),
                    _ => None,
                }
            })
        });
        TimerHeaders {
            session_expires: se.and_then(delta_seconds),
            refresher,
            min_se: msg.header("Min-SE").and_then(delta_seconds),
            supported: msg.lists("Supported", "timer") || msg.lists("Require", "timer"),
            allows_update: msg.lists("Allow", "UPDATE"),
        }
    }
}

/// A UAS's answer to a dialog-creating INVITE (§9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UasTimer {
    /// The interval is below our Min-SE: 422 with `Min-SE`.
    TooSmall { min_se: u32 },
    /// No session timer.
    Off,
    /// The 2xx carries `Session-Expires: interval;refresher=…` (and
    /// `Require: timer` when the caller supports timers).
    On {
        interval: u32,
        refresher: Refresher,
        require: bool,
    },
}

/// Decides a UAS's session timer for `req`. The caller refreshes if it
/// says so; with no choice made we refresh when the caller accepts UPDATE
/// (our refresh), else we leave it to the caller.
pub fn answer_invite(req: &TimerHeaders, settings: TimerSettings) -> UasTimer {
    let floor = settings
        .min_se
        .max(req.min_se.unwrap_or(0))
        .max(MIN_SE_FLOOR);
    let interval = match req.session_expires {
        Some(se) if se < settings.min_se.max(MIN_SE_FLOOR) => {
            if req.supported {
                return UasTimer::TooSmall {
                    min_se: settings.min_se.max(MIN_SE_FLOOR),
                };
            }
            // A caller that cannot retry: we raise it instead (§9).
            floor
        }
        Some(se) => se.max(floor),
        None if req.supported && settings.session_expires > 0 => {
            settings.session_expires.max(floor)
        }
        None => return UasTimer::Off,
    };
    let refresher = match (req.supported, req.refresher) {
        // A caller without timer support refreshes nothing (§9).
        (false, _) => Refresher::Uas,
        (true, Some(r)) => r,
        (true, None) if req.allows_update => Refresher::Uas,
        (true, None) => Refresher::Uac,
    };
    UasTimer::On {
        interval,
        refresher,
        require: req.supported,
    }
}

/// What the running timer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// Send a refresh (UPDATE) now; we are the refresher.
    Refresh,
    /// The session expired without a refresh: send BYE and end the call.
    Expire,
}

/// One dialog's session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    interval: u32,
    we_refresh: bool,
    /// When the session was last refreshed (or started).
    since: Instant,
    /// Our refresh is out and not yet answered.
    refreshing: bool,
}

impl SessionTimer {
    pub fn new(interval: u32, we_refresh: bool, now: Instant) -> SessionTimer {
        SessionTimer {
            interval: interval.clamp(MIN_SE_FLOOR, MAX_INTERVAL),
            we_refresh,
            since: now,
            refreshing: false,
        }
    }

    pub fn interval(&self) -> u32 {
        self.interval
    }

    pub fn we_refresh(&self) -> bool {
        self.we_refresh
    }

    /// A refresh went through at `now` (ours answered 2xx, or theirs
    /// answered by us), possibly with a new interval and refresher.
    pub fn refreshed(&mut self, now: Instant, interval: Option<u32>, we_refresh: Option<bool>) {
        self.since = now;
        self.refreshing = false;
        if let Some(i) = interval {
            self.interval = i.clamp(MIN_SE_FLOOR, MAX_INTERVAL);
        }
        if let Some(w) = we_refresh {
            self.we_refresh = w;
        }
    }

    /// When the far end's silence ends the session (§10): the interval
    /// less min(32 s, a third of it).
    fn expiry(&self) -> Instant {
        let i = u64::from(self.interval);
        self.since + Duration::from_secs(i - (i / 3).min(32))
    }

    /// When we refresh: at half the interval (§7.1).
    fn refresh_at(&self) -> Instant {
        self.since + Duration::from_secs(u64::from(self.interval) / 2)
    }

    pub fn next_wake(&self) -> Instant {
        if self.we_refresh && !self.refreshing {
            self.refresh_at()
        } else {
            self.expiry()
        }
    }

    /// What is due at `now`, if anything. A refresh is asked for once per
    /// interval; if it never succeeds the session expires all the same.
    pub fn poll(&mut self, now: Instant) -> Option<TimerAction> {
        if now >= self.expiry() {
            return Some(TimerAction::Expire);
        }
        if self.we_refresh && !self.refreshing && now >= self.refresh_at() {
            self.refreshing = true;
            return Some(TimerAction::Refresh);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(raw: &str) -> TimerHeaders {
        let msg = format!(
            "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n\
             From: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n{raw}\
             Content-Length: 0\r\n\r\n"
        );
        TimerHeaders::read(&Message::parse(msg.as_bytes()).unwrap())
    }

    const SETTINGS: TimerSettings = TimerSettings {
        session_expires: 1800,
        min_se: 90,
    };

    #[test]
    fn headers_are_read_with_their_parameters() {
        let h = headers(
            "Session-Expires: 120;refresher=uac\r\nMin-SE: 100\r\nSupported: replaces, timer\r\n\
             Allow: INVITE, ACK, BYE, UPDATE\r\n",
        );
        assert_eq!(h.session_expires, Some(120));
        assert_eq!(h.refresher, Some(Refresher::Uac));
        assert_eq!(h.min_se, Some(100));
        assert!(h.supported && h.allows_update);
        let compact = headers("x: 300\r\nk: timer\r\n");
        assert_eq!(
            (compact.session_expires, compact.supported),
            (Some(300), true)
        );
        let junk = headers("Session-Expires: soon;refresher=maybe\r\nMin-SE: -1\r\n");
        assert_eq!(junk, TimerHeaders::default());
        let huge = headers("Session-Expires: 99999999999999999999\r\n");
        assert_eq!(huge.session_expires, None, "not a number we take");
    }

    #[test]
    fn a_uas_answers_422_only_to_callers_that_can_retry() {
        let small = headers("Session-Expires: 60\r\nSupported: timer\r\n");
        assert_eq!(
            answer_invite(&small, SETTINGS),
            UasTimer::TooSmall { min_se: 90 }
        );
        let strict = TimerSettings {
            min_se: 300,
            ..SETTINGS
        };
        let asked = headers("Session-Expires: 120\r\nSupported: timer\r\n");
        assert_eq!(
            answer_invite(&asked, strict),
            UasTimer::TooSmall { min_se: 300 }
        );
        // Without Supported: timer the interval is raised, and we refresh.
        let old = headers("Session-Expires: 60\r\n");
        assert_eq!(
            answer_invite(&old, SETTINGS),
            UasTimer::On {
                interval: 90,
                refresher: Refresher::Uas,
                require: false
            }
        );
    }

    #[test]
    fn the_refresher_is_the_callers_choice_else_ours() {
        let uac = headers("Session-Expires: 120;refresher=uac\r\nSupported: timer\r\n");
        assert_eq!(
            answer_invite(&uac, SETTINGS),
            UasTimer::On {
                interval: 120,
                refresher: Refresher::Uac,
                require: true
            }
        );
        let free = headers("Session-Expires: 120\r\nSupported: timer\r\nAllow: UPDATE\r\n");
        assert!(matches!(
            answer_invite(&free, SETTINGS),
            UasTimer::On {
                refresher: Refresher::Uas,
                ..
            }
        ));
        let no_update = headers("Session-Expires: 120\r\nSupported: timer\r\n");
        assert!(matches!(
            answer_invite(&no_update, SETTINGS),
            UasTimer::On {
                refresher: Refresher::Uac,
                ..
            }
        ));
        // Their Min-SE raises our interval.
        let floor = headers("Session-Expires: 120\r\nMin-SE: 600\r\nSupported: timer\r\n");
        assert!(matches!(
            answer_invite(&floor, SETTINGS),
            UasTimer::On { interval: 600, .. }
        ));
        // Supported but not asked: we grant ours; not supported: none.
        let quiet = headers("Supported: timer\r\n");
        assert!(matches!(
            answer_invite(&quiet, SETTINGS),
            UasTimer::On { interval: 1800, .. }
        ));
        assert_eq!(answer_invite(&headers(""), SETTINGS), UasTimer::Off);
    }

    #[test]
    fn far_end_refresher_that_goes_quiet_expires_the_session_on_time() {
        let t0 = Instant::now();
        let mut timer = SessionTimer::new(90, false, t0);
        // §10: BYE at 90 - min(32, 30) = 60 s.
        assert_eq!(timer.next_wake(), t0 + Duration::from_secs(60));
        assert_eq!(timer.poll(t0 + Duration::from_secs(59)), None);
        // A refresh at 50 s pushes it out.
        timer.refreshed(t0 + Duration::from_secs(50), None, None);
        assert_eq!(timer.poll(t0 + Duration::from_secs(100)), None);
        assert_eq!(timer.next_wake(), t0 + Duration::from_secs(110));
        assert_eq!(
            timer.poll(t0 + Duration::from_secs(110)),
            Some(TimerAction::Expire)
        );
        // Long intervals keep 32 s of margin.
        let long = SessionTimer::new(1800, false, t0);
        assert_eq!(long.next_wake(), t0 + Duration::from_secs(1768));
    }

    #[test]
    fn as_refresher_we_refresh_at_half_time_once_and_expire_if_it_never_lands() {
        let t0 = Instant::now();
        let mut timer = SessionTimer::new(120, true, t0);
        assert_eq!(timer.next_wake(), t0 + Duration::from_secs(60));
        assert_eq!(timer.poll(t0 + Duration::from_secs(59)), None);
        assert_eq!(
            timer.poll(t0 + Duration::from_secs(60)),
            Some(TimerAction::Refresh)
        );
        // Asked once: the next wake is the expiry, in case it never lands.
        assert_eq!(timer.poll(t0 + Duration::from_secs(61)), None);
        assert_eq!(timer.next_wake(), t0 + Duration::from_secs(88));
        // Our UPDATE got its 200 at 61 s: the next refresh is at 121 s.
        timer.refreshed(t0 + Duration::from_secs(61), Some(120), None);
        assert_eq!(timer.next_wake(), t0 + Duration::from_secs(121));
        assert_eq!(
            timer.poll(t0 + Duration::from_secs(121)),
            Some(TimerAction::Refresh)
        );
        // This one never answers: the session ends at 61 + 88 s.
        assert_eq!(timer.poll(t0 + Duration::from_secs(148)), None);
        assert_eq!(
            timer.poll(t0 + Duration::from_secs(149)),
            Some(TimerAction::Expire)
        );
        // Intervals are kept within bounds.
        assert_eq!(SessionTimer::new(5, true, t0).interval(), 90);
        assert_eq!(SessionTimer::new(u32::MAX, true, t0).interval(), 86_400);
    }
}
