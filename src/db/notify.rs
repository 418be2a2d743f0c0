//! LISTEN/NOTIFY for what the process keeps in memory of the database (the
//! knowledge indexes, agents' profiles): one connection follows every
//! channel, and reconnects itself. Notifications sent while it is not
//! connected are lost, so each follower hears when listening stops and
//! when it starts again, and must then treat what it holds as unverified.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::postgres::PgListener;
use sqlx::PgPool;

/// Something kept current by a channel's notifications.
#[async_trait]
pub trait Follower: Send + Sync {
    /// Listening from now on; what changed before is unknown.
    async fn connected(&self);
    /// A notification on this follower's channel.
    async fn notified(&self, payload: &str);
    /// Listening stopped: nothing said from here on will be heard.
    fn disconnected(&self);
}

/// A follower and the channel it hears.
pub struct Subscription {
    pub channel: &'static str,
    pub follower: Weak<dyn Follower>,
}

impl Subscription {
    pub fn new<F: Follower + 'static>(channel: &'static str, follower: &Arc<F>) -> Subscription {
        let follower: Weak<F> = Arc::downgrade(follower);
        Subscription { channel, follower }
    }
}

/// How a listener keeps itself honest.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often a quiet listener looks whether its followers are still
    /// alive.
    pub alive_check: Duration,
    /// A listener that has heard nothing for this long asks its connection
    /// a `select 1`: a connection that died without a word (a firewall's
    /// idle timeout, a host gone from the network) never ends a receive,
    /// and its followers would go on believing they hear every change.
    pub probe_after: Duration,
    /// The probe's answer must come within this, or the connection counts
    /// as lost.
    pub probe_deadline: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            alive_check: Duration::from_secs(5),
            probe_after: Duration::from_secs(30),
            probe_deadline: Duration::from_secs(5),
        }
    }
}

/// Pause before connecting again after a failure.
const RETRY: Duration = Duration::from_secs(1);
/// Pause before reconnecting after the connection closed.
const RECONNECT: Duration = Duration::from_millis(200);

/// Follows every subscription's channel on one connection for as long as
/// any of the followers lives.
pub fn follow(pool: PgPool, subscriptions: Vec<Subscription>) -> tokio::task::JoinHandle<()> {
    follow_with(pool, subscriptions, Timing::default())
}

/// [`follow`] with other timing (tests shorten the probe).
pub fn follow_with(
    pool: PgPool,
    subscriptions: Vec<Subscription>,
    timing: Timing,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { listen(pool, subscriptions, timing).await })
}

/// [`follow`] with a single follower.
pub fn follow_one<F: Follower + 'static>(
    pool: PgPool,
    channel: &'static str,
    follower: &Arc<F>,
) -> tokio::task::JoinHandle<()> {
    follow(pool, vec![Subscription::new(channel, follower)])
}

/// The followers still alive, of `channel` only when one is given.
fn live<'a>(
    subscriptions: &'a [Subscription],
    channel: Option<&'a str>,
) -> impl Iterator<Item = Arc<dyn Follower>> + 'a {
    subscriptions
        .iter()
        .filter(move |s| channel.is_none_or(|c| s.channel == c))
        .filter_map(|s| s.follower.upgrade())
}

async fn listen(pool: PgPool, subscriptions: Vec<Subscription>, timing: Timing) {
    let alive = || subscriptions.iter().any(|s| s.follower.strong_count() > 0);
    let mut listener: Option<PgListener> = None;
    let mut heard_at = Instant::now();
    while alive() {
        let Some(l) = listener.as_mut() else {
            match connect(&pool, &subscriptions).await {
                Ok(l) => {
                    listener = Some(l);
                    heard_at = Instant::now();
                    for f in live(&subscriptions, None) {
                        f.connected().await;
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "database listener not connected");
                    tokio::time::sleep(RETRY).await;
                }
            }
            continue;
        };
        let lost = match tokio::time::timeout(timing.alive_check, l.try_recv()).await {
            Err(_) if heard_at.elapsed() < timing.probe_after => false,
            Err(_) => {
                let probe = sqlx::query("select 1").execute(&mut *l);
                let answered = matches!(
                    tokio::time::timeout(timing.probe_deadline, probe).await,
                    Ok(Ok(_))
                );
                if answered {
                    heard_at = Instant::now();
                } else {
                    // Dropping the listener sends its UNLISTEN into the
                    // dead connection (sqlx does, in a task of its own),
                    // which holds that pool connection until the kernel
                    // gives the connection up.
                    tracing::warn!(
                        deadline_ms = timing.probe_deadline.as_millis() as u64,
                        "database listener's connection did not answer; reconnecting"
                    );
                }
                !answered
            }
            Ok(Ok(Some(note))) => {
                heard_at = Instant::now();
                for f in live(&subscriptions, Some(note.channel())) {
                    f.notified(note.payload()).await;
                }
                false
            }
            // The connection closed. sqlx would reconnect on the next
            // receive, silently; reconnecting here tells the followers the
            // moment from which they hear changes again.
            Ok(Ok(None)) | Ok(Err(_)) => {
                tracing::debug!("database listener lost its connection");
                true
            }
        };
        if lost {
            for f in live(&subscriptions, None) {
                f.disconnected();
            }
            listener = None;
            tokio::time::sleep(RECONNECT).await;
        }
    }
}

async fn connect(pool: &PgPool, subscriptions: &[Subscription]) -> Result<PgListener, sqlx::Error> {
    let mut l = PgListener::connect_with(pool).await?;
    let mut channels: Vec<&str> = subscriptions.iter().map(|s| s.channel).collect();
    channels.sort_unstable();
    channels.dedup();
    l.listen_all(channels).await?;
    Ok(l)
}
