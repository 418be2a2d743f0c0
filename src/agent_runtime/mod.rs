//! The conversation on a live call: one task per call running the turn loop
//! (VAD → STT → retrieval → LLM → TTS), barge-in, persona rules, transfer,
//! usage accounting and the call's records.
pub mod admission;
pub mod amd;
pub mod amd_gate;
pub mod bert;
pub mod call;
pub mod call_machine;
pub mod embeddings;
pub mod leads;
pub mod ledger;
pub mod leg;
pub mod listen;
pub mod llm;
pub mod llm_http;
pub mod llm_offline;
pub mod onnx_env;
pub mod phonemize;
pub mod profile;
pub mod profile_cache;
pub mod profiles;
pub mod provider_error;
pub mod provider_http;
pub mod providers;
pub mod read_aloud;
pub mod registry;
pub mod reply;
pub mod retrieval;
pub mod runtime;
pub mod sentence_embedder;
pub mod sentences;
pub mod sse;
pub mod stt;
pub mod stt_clean;
pub mod stt_http;
pub mod transcript;
pub mod tts;
pub mod tts_cache;
pub mod tts_http;
pub mod tts_piper;
pub mod tts_prerender;
pub mod turn;
pub mod vector_cache;
pub mod warm;
pub mod wav;
pub mod web_leg;

pub use runtime::{AgentCalls, Runtime};
