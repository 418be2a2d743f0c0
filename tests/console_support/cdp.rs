//! Headless Chromium (Debian `chromium`) driven over the DevTools protocol:
//! the browser is started with a fake microphone (a WAV file), loopback
//! allowed for WebRTC and autoplay on; one page is attached over a
//! WebSocket. Every JavaScript exception, `console.error` and browser log
//! entry at level error is collected, so a test can assert a page logged
//! none.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// What the browser reported as an error on the page.
#[derive(Debug, Clone)]
pub struct PageError {
    pub source: &'static str,
    pub text: String,
}

pub struct Chromium {
    child: tokio::process::Child,
    pub port: u16,
    pub log: PathBuf,
}

pub struct ChromiumOptions<'a> {
    /// DevTools port (in the test's own range).
    pub port: u16,
    pub profile_dir: &'a Path,
    /// The fake microphone: played once from the moment capture starts.
    pub microphone: Option<&'a Path>,
}

impl Chromium {
    /// Starts headless Chromium, or fails the test saying how to install it.
    pub async fn start(o: ChromiumOptions<'_>) -> Chromium {
        let program = which("chromium").unwrap_or_else(|| {
            panic!("chromium is not installed: run scripts/setup (Debian package `chromium`)")
        });
        let log = o.profile_dir.join("chromium.log");
        let mut args: Vec<String> = vec![
            "--headless=new".into(),
            "--no-sandbox".into(), // tests run as root here
            "--disable-gpu".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--disable-default-apps".into(),
            "--disable-domain-reliability".into(),
            "--no-pings".into(),
            "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication".into(),
            "--password-store=basic".into(),
            "--use-fake-ui-for-media-stream".into(),
            "--use-fake-device-for-media-stream".into(),
            "--allow-loopback-in-peer-connection".into(),
            "--autoplay-policy=no-user-gesture-required".into(),
            "--window-size=1280,900".into(),
            "--remote-debugging-address=127.0.0.1".into(),
            format!("--remote-debugging-port={}", o.port),
            format!("--user-data-dir={}", o.profile_dir.join("profile").display()),
        ];
        if let Some(mic) = o.microphone {
            args.push(format!(
                "--use-file-for-fake-audio-capture={}%noloop",
                mic.display()
            ));
        }
        args.push("about:blank".into());
        let log_file = std::fs::File::create(&log).expect("chromium log");
        let child = tokio::process::Command::new(program)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        let browser = Chromium {
            child,
            port: o.port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if browser.json("/json/version").await.is_some() {
                return browser;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port {}:\n{}",
                o.port,
                std::fs::read_to_string(&browser.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn json(&self, path: &str) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let r = reqwest::get(&url).await.ok()?;
        r.json().await.ok()
    }

    /// A new tab, attached and with errors collected from the start.
    pub async fn page(&self) -> Page {
        let url = format!("http://127.0.0.1:{}/json/new?about:blank", self.port);
        let target: Value = reqwest::Client::new()
            .put(&url)
            .send()
            .await
            .expect("new tab")
            .json()
            .await
            .expect("new tab json");
        let ws = target["webSocketDebuggerUrl"]
            .as_str()
            .expect("tab websocket")
            .to_string();
        Page::attach(&ws).await
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// One tab.
pub struct Page {
    out: mpsc::Sender<String>,
    pending: Pending,
    next: AtomicU64,
    errors: Arc<Mutex<Vec<PageError>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Page {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn page_error(method: &str, params: &Value) -> Option<PageError> {
    match method {
        "Runtime.exceptionThrown" => {
            let d = &params["exceptionDetails"];
            let text = d["exception"]["description"]
                .as_str()
                .or(d["text"].as_str())
                .unwrap_or("exception");
            Some(PageError {
                source: "exception",
                text: format!("{text} at {}:{}", d["url"], d["lineNumber"]),
            })
        }
        "Runtime.consoleAPICalled"
            if matches!(params["type"].as_str(), Some("error" | "assert")) =>
        {
            let args: Vec<String> = params["args"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| {
                            v["value"]
                                .as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v["description"].to_string())
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(PageError {
                source: "console.error",
                text: args.join(" "),
            })
        }
        "Log.entryAdded" if params["entry"]["level"] == "error" => Some(PageError {
            source: "log",
            text: format!(
                "{} ({})",
                params["entry"]["text"].as_str().unwrap_or_default(),
                params["entry"]["url"].as_str().unwrap_or_default()
            ),
        }),
        _ => None,
    }
}

impl Page {
    async fn attach(ws_url: &str) -> Page {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .expect("devtools websocket");
        let (mut sink, mut stream) = ws.split();
        let pending: Pending = Arc::default();
        let errors: Arc<Mutex<Vec<PageError>>> = Arc::default();
        let (out, mut out_rx) = mpsc::channel::<String>(64);
        let reader = tokio::spawn({
            let (pending, errors) = (pending.clone(), errors.clone());
            async move {
                loop {
                    tokio::select! {
                        Some(text) = out_rx.recv() => {
                            if sink.send(Message::Text(text.into())).await.is_err() { break; }
                        }
                        msg = stream.next() => {
                            let Some(Ok(Message::Text(text))) = msg else {
                                if msg.is_none() { break; }
                                continue;
                            };
                            let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                            if let Some(id) = v["id"].as_u64() {
                                if let Some(tx) = pending.lock().unwrap().remove(&id) {
                                    let _ = tx.send(v);
                                }
                            } else if let Some(method) = v["method"].as_str() {
                                if let Some(e) = page_error(method, &v["params"]) {
                                    errors.lock().unwrap().push(e);
                                }
                            }
                        }
                    }
                }
            }
        });
        let page = Page {
            out,
            pending,
            next: AtomicU64::new(1),
            errors,
            reader,
        };
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            page.call(domain, json!({})).await;
        }
        page
    }

    /// A DevTools command; panics on a protocol error (a test bug).
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.out.send(msg).await.expect("devtools connection");
        let v = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer in 60 s"))
            .expect("devtools answer");
        if let Some(err) = v.get("error") {
            panic!("{method}: {err}");
        }
        v["result"].clone()
    }

    /// Evaluates `expr` (promises awaited) and returns its JSON value.
    pub async fn eval(&self, expr: &str) -> Result<Value, String> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(d) = r.get("exceptionDetails") {
            return Err(d["exception"]["description"]
                .as_str()
                .unwrap_or("exception")
                .to_string());
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `expr` until it is truthy; panics after `limit` with `what`.
    pub async fn wait_for(&self, expr: &str, limit: Duration, what: &str) -> Value {
        let deadline = Instant::now() + limit;
        let mut last: Value;
        loop {
            match self.eval(expr).await {
                Ok(v) if !v.is_null() && v != json!(false) && v != json!("") && v != json!(0) => {
                    return v
                }
                Ok(v) => last = v,
                Err(e) => last = json!(e),
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not true within {limit:?} ({expr} → {last}); page errors: {:?}",
                self.errors()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn navigate(&self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(30),
            url,
        )
        .await;
    }

    pub async fn screenshot(&self, path: &Path) {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("png"))
            .expect("base64");
        std::fs::write(path, png).expect("screenshot written");
    }

    pub fn errors(&self) -> Vec<PageError> {
        self.errors.lock().unwrap().clone()
    }

    pub fn take_errors(&self) -> Vec<PageError> {
        std::mem::take(&mut *self.errors.lock().unwrap())
    }
}
