//! The integration suite, one test binary: each `tests/<name>.rs` is a
//! module here, and the support modules below are compiled once for all of
//! them. (As 62 binaries the suite compiled the support code into each one
//! and linked each: 549 s of a fresh build's CPU.) nextest still runs every
//! test in its own process; select a file's tests by path, e.g.
//! `cargo nextest run e2e_call::` or `-E 'test(/^e2e_call::/)'`.

mod api_support;
mod common;
mod console_support;
mod providers_support;
mod secure_support;
mod security_support;
mod sip_support;

mod amd_fixtures;
mod api_crud;
mod api_input;
mod api_knowledge;
mod api_roles;
mod api_tenancy;
mod api_trunk_presets;
mod cluster_kamailio;
mod console_browser_call;
mod console_chromium;
mod db_notify;
mod db_pool;
mod db_rls;
mod db_schema;
mod db_seed;
mod e2e_call;
mod e2e_secure_call;
mod embeddings_local;
mod media_loopback;
mod media_opus;
mod media_playout_timing;
mod media_sipp_pcap;
mod media_vad;
mod metrics;
mod providers_bundle;
mod providers_http;
mod providers_knowledge;
mod providers_local;
mod retrieval_paraphrase;
mod runtime_admission;
mod runtime_bargein;
mod runtime_embeddings;
mod runtime_leads;
mod runtime_live_api;
mod runtime_outage;
mod runtime_profile_cache;
mod runtime_providers;
mod runtime_recording;
mod runtime_records;
mod runtime_transfer;
mod runtime_warm_replaces;
mod runtime_warm_transfer;
mod security_digest;
mod security_media;
mod security_providers;
mod security_sip;
mod security_tcp;
mod setup_fresh_clone;
mod sip_bench_node;
mod sip_inbound;
mod sip_opus;
mod sip_outbound;
mod sip_outbound_amd;
mod sip_retransmit;
mod sip_robustness;
mod sip_routing;
mod sip_session_timer;
mod sip_tls;
mod sip_transfer;
mod sip_websocket;
mod stt_clean_transcripts;
mod tts_piper;
mod tts_prerendered;
mod webrtc_whip;
mod webrtc_whip_sessions;
