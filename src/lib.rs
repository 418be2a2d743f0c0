//! Switchboard: a voice and telephony runtime for AI agents.
//!
//! The crate is one binary's library. Layers follow `DESIGN.md`: `sip` and
//! `media` know nothing of agents or the database (beyond SIP routing),
//! `agent_runtime` runs the conversation of each call, `api` is the admin face,
//! and `db` owns the pool, migrations and typed queries; `metrics` is the
//! process's one Prometheus registry, which every layer records into, and
//! `telemetry` posts each call's turns as OTLP traces when configured.

pub mod agent_runtime;
pub mod api;
pub mod config;
pub mod db;
pub mod domain;
pub mod heap;
pub mod media;
pub mod metrics;
pub mod outbound;
pub mod readiness;
pub mod records;
pub mod secrets;
pub mod serve;
pub mod sip;
pub mod telemetry;
