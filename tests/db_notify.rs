//! The database listener (`db::notify`) against real PostgreSQL through a
//! TCP relay the test controls. The relay can go silent on the connections
//! it carries — they stay open, nothing passes, as when a firewall forgets
//! an idle connection or a host drops off the network — while new
//! connections pass. A listener on such a connection hears nothing and gets
//! no error; its probe must find that out and reconnect, and the followers
//! must hear that listening stopped and started again (so the knowledge
//! indexes rebuild instead of serving stale knowledge forever).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard::db::notify::{follow_with, Follower, Subscription, Timing};
use switchboard::db::testing::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::node::poll;

const CHANNEL: &str = "switchboard_test_notify";

/// A relay to PostgreSQL; `silence_existing()` stops every connection
/// opened so far from passing anything, without closing it.
struct Relay {
    addr: SocketAddr,
    /// Connections numbered below this pass nothing.
    silent_below: Arc<AtomicU64>,
    /// Connections accepted so far.
    opened: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let silent_below = Arc::new(AtomicU64::new(0));
        let silent = silent_below.clone();
        let opened = Arc::new(AtomicU64::new(0));
        let counter = opened.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(to).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, n, silent.clone()));
                tokio::spawn(pump(sr, cw, n, silent.clone()));
            }
        });
        Relay {
            addr,
            silent_below,
            opened,
            task,
        }
    }

    fn silence_existing(&self) {
        self.silent_below
            .store(self.opened.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` until either closes; once connection `n` is
/// silenced, reads on and drops what it reads (both ends stay open).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    n: u64,
    silent_below: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    // Bounded: a test lasts seconds; the relay's tasks end with the
    // runtime in any case.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while let Ok(Ok(read)) = tokio::time::timeout_at(deadline, from.read(&mut buf)).await {
        if read == 0 {
            return;
        }
        if n < silent_below.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..read]).await.is_err() {
            return;
        }
    }
}

/// What a follower heard, in order.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn events(&self) -> Vec<String> {
        self.0.lock().expect("log").clone()
    }
    fn push(&self, e: &str) {
        self.0.lock().expect("log").push(e.to_string());
    }
}

#[async_trait::async_trait]
impl Follower for Log {
    async fn connected(&self) {
        self.push("connected");
    }
    async fn notified(&self, payload: &str) {
        self.push(payload);
    }
    fn disconnected(&self) {
        self.push("disconnected");
    }
}

struct Setup {
    db: TestDb,
    relay: Relay,
    log: Arc<Log>,
    _listener: tokio::task::JoinHandle<()>,
}

async fn setup(timing: Timing) -> Setup {
    let db = TestDb::new().await;
    let pg: SocketAddr = {
        let opts = db.pool.connect_options();
        format!("{}:{}", opts.get_host(), opts.get_port())
            .parse()
            .expect("PostgreSQL on an IP address")
    };
    let relay = Relay::start(pg).await;
    let options = (*db.pool.connect_options())
        .clone()
        .host("127.0.0.1")
        .port(relay.addr.port());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_lazy_with(options);
    let log = Arc::new(Log::default());
    let listener = follow_with(pool, vec![Subscription::new(CHANNEL, &log)], timing);
    let s = Setup {
        db,
        relay,
        log,
        _listener: listener,
    };
    s.heard("connected", 1).await;
    s
}

impl Setup {
    async fn notify(&self, payload: &str) {
        sqlx::query("select pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&self.db.pool)
            .await
            .expect("notify");
    }

    /// Waits (bounded) until `event` has been heard `times` times.
    async fn heard(&self, event: &str, times: usize) {
        let got = poll(Duration::from_secs(10), || async {
            (self.log.events().iter().filter(|e| *e == event).count() >= times).then_some(())
        })
        .await;
        assert!(
            got.is_some(),
            "{event:?} not heard {times} time(s): {:?}",
            self.log.events()
        );
    }
}

fn quick_probe() -> Timing {
    Timing {
        alive_check: Duration::from_millis(200),
        probe_after: Duration::from_secs(1),
        probe_deadline: Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_on_a_connection_gone_silent_reconnects_and_says_so() {
    let s = setup(quick_probe()).await;
    s.notify("before").await;
    s.heard("before", 1).await;

    // Every connection so far goes silent; the next one passes.
    s.relay.silence_existing();
    s.notify("unheard").await;
    s.heard("disconnected", 1).await;
    s.heard("connected", 2).await;
    s.notify("after").await;
    s.heard("after", 1).await;

    let events = s.log.events();
    assert_eq!(
        events,
        ["connected", "before", "disconnected", "connected", "after"],
        "a notification sent into the silent connection is never heard; the \
         followers hear that listening stopped and started again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_but_live_connection_is_kept() {
    let s = setup(quick_probe()).await;
    // Four probes' worth of quiet: each answered, no reconnect.
    tokio::time::sleep(Duration::from_secs(4)).await;
    s.notify("still here").await;
    s.heard("still here", 1).await;
    assert_eq!(s.log.events(), ["connected", "still here"]);
}
