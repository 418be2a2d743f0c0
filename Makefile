# The whole set-up on a fresh Debian machine is `make run` or `make test`.
SHELL := /bin/bash
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)
FUZZ_SECONDS ?= 30
# FUZZ_RUNS=1000000: each target runs that many inputs instead (no time limit).
FUZZ_RUNS ?=
FUZZ_TARGETS := sip_message sdp rtp_parse rtcp_parse telephone_event jitter_ops

.PHONY: run test setup build fuzz fuzz-api bench

setup:
	@scripts/setup

build: setup
	$(CARGO) build --release

run: build
	./target/release/switchboard migrate
	./target/release/switchboard seed-demo
	@echo
	@echo "Switchboard is starting. Call the demo agent:  sip:+15555550100@127.0.0.1:5060"
	@echo "  e.g.  baresip -e '/dial sip:+15555550100@127.0.0.1:5060'   or   sipp -sn uac -s +15555550100 127.0.0.1:5060 -m 1"
	@echo "API:    http://127.0.0.1:8080/healthz   docs: http://127.0.0.1:8080/docs   (log in as demo@example.com)"
	@echo "Stop with Ctrl-C."
	@echo
	exec ./target/release/switchboard serve

# cargo-nextest runs every test in its own process, several side by side,
# and the whisper-bound ones in three lanes (.config/nextest.toml).
# Tests bind fixed ports in 36000-56999 (each suite its own block); as root,
# that range is kept out of the kernel's ephemeral ports, so a database
# connection of one test cannot hold a port another test must bind.
test: setup
	@command -v cargo-nextest >/dev/null || $(CARGO) install cargo-nextest --locked
	@if [ "$$(id -u)" = 0 ]; then sysctl -qw net.ipv4.ip_local_reserved_ports=36000-56999 || echo "could not reserve the test ports 36000-56999"; fi
	$(CARGO) nextest run --workspace --no-fail-fast

# Coverage-guided fuzzing of every parser, $(FUZZ_SECONDS) s each (cargo-fuzz, libFuzzer).
fuzz: setup
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@# cargo-fuzz needs nightly flags: the nightly toolchain when installed, else stable with RUSTC_BOOTSTRAP.
	if rustup toolchain list 2>/dev/null | grep -q nightly; then tc=+nightly; else tc=; export RUSTC_BOOTSTRAP=1; fi; \
	for t in $(FUZZ_TARGETS); do \
	  if [ -n "$(FUZZ_RUNS)" ]; then limit=-runs=$(FUZZ_RUNS); else limit=-max_total_time=$(FUZZ_SECONDS); fi; \
	  $(CARGO) $$tc fuzz run -O $$t -- $$limit -rss_limit_mb=2048 -print_final_stats=1 || exit 1; \
	done

# Schemathesis against /openapi.json of a running node; fails on any 5xx.
fuzz-api: build
	bench/api/fuzz-api.sh

# Benchmarks; figures go to bench/results/.
bench: build
	$(CARGO) bench --bench latency
	bench/sip-capacity/run.sh
