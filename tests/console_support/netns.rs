//! Browser calls whose every packet stays on 127.0.0.0/8. Chromium gathers
//! ICE candidates on each interface of the machine, so even against a node
//! that offers loopback only it sends from the machine's own address. A
//! test that needs loopback alone runs again inside a network namespace
//! with nothing but `lo` (`unshare --net`, root): Chromium, the node and the
//! test's own clients all live in it, and PostgreSQL, which listens in the
//! machine's namespace, is reached over its Unix socket (a file, seen from
//! every namespace).

use std::process::Command;

/// Set in the re-run inside the namespace.
const INSIDE: &str = "SWITCHBOARD_TEST_LOOPBACK_NETNS";

/// True when the caller is already inside the loopback-only namespace and
/// should run its test; otherwise runs `test` (this test binary's test of
/// that path, its module included: `console_browser_call::…`) inside a new
/// one, fails if it fails, and returns false.
pub async fn in_loopback_namespace(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        let addrs = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-o", "addr", "show"])
                .output()
                .expect("ip (iproute2)")
                .stdout,
        )
        .into_owned();
        for line in addrs.lines() {
            assert!(
                line.split_whitespace().nth(1) == Some("lo"),
                "an interface besides lo in the test's namespace: {line}"
            );
        }
        return true;
    }
    let url = socket_url().await;
    let exe = std::env::current_exe().expect("the test binary");
    let status = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .env("DATABASE_URL", &url)
        .env("SWITCHBOARD_TEST_DATABASE_URL", &url)
        .status()
        .expect("unshare (util-linux; the tests run as root)");
    assert!(
        status.success(),
        "{test} failed inside its loopback-only network namespace ({status})"
    );
    false
}

/// The test database server's address over its Unix socket, as a URL
/// whose database part `db::testing` can replace.
async fn socket_url() -> String {
    use sqlx::Connection;
    let admin = switchboard::db::testing::admin_url();
    let mut c = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is required ({admin}): {e}"));
    let dirs: String = sqlx::query_scalar("select current_setting('unix_socket_directories')")
        .fetch_one(&mut c)
        .await
        .expect("unix_socket_directories");
    let port: String = sqlx::query_scalar("select current_setting('port')")
        .fetch_one(&mut c)
        .await
        .expect("port");
    let user: String = sqlx::query_scalar("select current_user::text")
        .fetch_one(&mut c)
        .await
        .expect("user");
    let dir = dirs
        .split(',')
        .map(str::trim)
        .find(|d| !d.is_empty() && !d.starts_with('@'))
        .unwrap_or_else(|| panic!("PostgreSQL has no Unix socket directory ({dirs:?})"));
    let encoded: String = dir
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("postgres://{user}@localhost/postgres?host={encoded}&port={port}")
}
