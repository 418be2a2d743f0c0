#!/usr/bin/env bash
# Conversation benchmark: builds the release node and the caller, starts
# PostgreSQL (scripts/setup), then runs bench/conversation/main.rs, which
# writes bench/results/conversation.json and prints a table.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/setup
cargo build --release --bin switchboard
cargo bench --bench conversation "$@"
