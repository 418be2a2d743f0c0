//! Fresh-clone set-up without `../shared`: the committed checkout is cloned
//! into an empty folder, `scripts/setup-models` runs there with its own data
//! folder, and every file of `scripts/models.toml` must land in `data/models`
//! with its checksum, from the PyPI packages alone; a second run must be a
//! quick no-op.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The first run fetches six packages (pip's cache is warm after `make test`'s
/// set-up), builds a venv and converts two Whisper models: about 40 s here.
const FIRST_RUN_LIMIT: Duration = Duration::from_secs(900);
/// A rerun only stats the files.
const RERUN_LIMIT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct Manifest {
    file: Vec<ManifestFile>,
    #[serde(default)]
    link: Vec<ManifestLink>,
}

#[derive(Deserialize)]
struct ManifestFile {
    path: String,
    sha256: String,
    size: u64,
}

#[derive(Deserialize)]
struct ManifestLink {
    path: String,
    target: String,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs the models script to completion within `limit`; returns its output
/// and how long it took.
fn setup_models(clone: &Path, data: &Path, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let log = data.with_extension("log");
    let mut child = Command::new(clone.join("scripts/setup-models"))
        .arg("--data")
        .arg(data)
        .current_dir(clone)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).expect("log file"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("scripts/setup-models starts");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("scripts/setup-models took over {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = fs::read_to_string(&log).expect("log");
    print!("{output}");
    assert!(status.success(), "scripts/setup-models failed: {status}");
    (output, started.elapsed())
}

fn sha256_of(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

/// (inode, mtime) of every manifest file, to prove a rerun touched nothing.
fn identities(models: &Path, manifest: &Manifest) -> HashMap<String, (u64, i64)> {
    manifest
        .file
        .iter()
        .map(|f| {
            let m = fs::metadata(models.join(&f.path)).expect("metadata");
            (
                f.path.clone(),
                (m.ino(), m.mtime_nsec() + m.mtime() * 1_000_000_000),
            )
        })
        .collect()
}

#[test]
fn fresh_clone_setup_puts_every_model_in_data_models() {
    let checkout = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let head = git(&checkout, &["rev-parse", "HEAD"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let clone = tmp.path().join("switchboard");
    let data = tmp.path().join("data");
    let out = Command::new("git")
        .args(["clone", "--quiet", "--no-checkout"])
        .arg(&checkout)
        .arg(&clone)
        .output()
        .expect("git clone runs");
    assert!(
        out.status.success(),
        "git clone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    git(&clone, &["checkout", "--quiet", "--detach", &head]);
    // What the script would use as a cache must not exist.
    assert!(!tmp.path().join("shared").exists());

    let manifest: Manifest =
        toml::from_str(&fs::read_to_string(clone.join("scripts/models.toml")).expect("manifest"))
            .expect("manifest parses");
    assert!(manifest
        .file
        .iter()
        .any(|f| f.path == "ggml-tiny.en-q8_0.bin"));
    assert!(manifest.file.iter().any(|f| f.path == "ggml-base.bin"));

    let (first, took) = setup_models(&clone, &data, FIRST_RUN_LIMIT);
    println!("first run: {:.1} s", took.as_secs_f64());
    assert!(!first.contains("from the cache"), "{first}");

    let models = data.join("models");
    for f in &manifest.file {
        let path = models.join(&f.path);
        let meta = fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("{} missing: {e}", path.display()));
        assert!(meta.is_file(), "{} is not a plain file", f.path);
        assert_eq!(meta.len(), f.size, "{} size", f.path);
        assert_eq!(sha256_of(&path), f.sha256, "{} sha256", f.path);
    }
    for l in &manifest.link {
        let path = models.join(&l.path);
        assert_eq!(
            fs::read_link(&path).expect("link").to_string_lossy(),
            l.target,
            "{}",
            l.path
        );
        assert!(path.is_file(), "{} resolves", l.path);
    }
    let leftovers: Vec<_> = walk(&models)
        .into_iter()
        .filter(|p| {
            p.to_string_lossy().contains(".tmp.") || p.to_string_lossy().contains(".download-")
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let venv_python = data.join("venv/bin/python");
    let ok = Command::new(&venv_python)
        .args(["-c", "import numpy, piper"])
        .status()
        .expect("venv python runs");
    assert!(ok.success(), "data/venv lacks numpy or piper");

    let before = identities(&models, &manifest);
    let (second, took) = setup_models(&clone, &data, RERUN_LIMIT);
    println!("second run: {:.2} s", took.as_secs_f64());
    assert!(second.contains("(0 built"), "{second}");
    assert!(!second.contains("fetching"), "{second}");
    assert_eq!(
        identities(&models, &manifest),
        before,
        "a rerun replaced files"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).expect("read_dir").flatten() {
        let p = entry.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
