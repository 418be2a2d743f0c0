//! The process's one ONNX Runtime environment (ort allows one), loaded from
//! the shared library given in the configuration, for every in-process model.

use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;

use super::provider_error::ProviderError;

static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime from `library` (first call wins; later calls return
/// the first outcome).
pub fn init(library: &Path) -> Result<&'static Environment, ProviderError> {
    ENV.get_or_init(|| {
        if !library.is_file() {
            return Err(format!("ONNX Runtime not found at {}", library.display()));
        }
        ort::init_from(library)
            .map_err(|e| format!("{}: {e}", library.display()))?
            .with_name("switchboard")
            .build()
            .map_err(|e| format!("ONNX Runtime environment: {e}"))
    })
    .as_ref()
    .map_err(|e| ProviderError::Engine(e.clone()))
}

/// How a session holds its model's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// Repacked into the layout the matrix kernels prefer: fastest, but a
    /// private copy in the process's memory.
    Packed,
    /// Used where they lie: a model whose weights are an external data
    /// file (`model.onnx.data`) keeps them in ONNX Runtime's mapping of
    /// that file (page cache, shared by every process that maps it), at
    /// the cost of slower matrix products (about 1.3× for MPNet).
    Mapped,
}

/// A session on `model` with `threads` intra-op threads, in the environment
/// [`init`] created.
pub fn session(
    model: &Path,
    threads: usize,
    weights: Weights,
) -> Result<ort::session::Session, ProviderError> {
    let engine =
        |e: &dyn std::fmt::Display| ProviderError::Engine(format!("{}: {e}", model.display()));
    let builder = ort::session::Session::builder(environment()?).map_err(|e| engine(&e))?;
    let builder = builder
        .with_intra_threads(threads.max(1))
        .map_err(|e| engine(&e))?;
    // Idle worker threads sleep instead of spinning: the recognizer, the
    // voice and the embedder share the cores, and a spinning pool takes
    // the CPU the others wait for.
    let builder = builder
        .with_intra_op_spinning(false)
        .map_err(|e| engine(&e))?;
    let mut builder = builder
        .with_prepacking(weights == Weights::Packed)
        .map_err(|e| engine(&e))?;
    builder.commit_from_file(model).map_err(|e| engine(&e))
}

/// The environment [`init`] created.
pub fn environment() -> Result<&'static Environment, ProviderError> {
    match ENV.get() {
        Some(Ok(env)) => Ok(env),
        Some(Err(e)) => Err(ProviderError::Engine(e.clone())),
        None => Err(ProviderError::Engine("ONNX Runtime not loaded".into())),
    }
}
