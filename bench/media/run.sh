#!/usr/bin/env bash
# bench/media: N concurrent loopback RTP sessions (G.711 both ways, jitter
# buffer, resampling, VAD/endpointing, 20 ms paced playout) on this machine.
# Prints JSON and writes bench/results/media.json.
#
#   bench/media/run.sh                 # N = 100, 500, 1000, 10 s each
#   bench/media/run.sh --n 200 --secs 5
#   bench/media/run.sh --n 1000 --clock-normal --out /tmp/normal.json
#
# The media clock threads ask for SCHED_FIFO (they fall back to nice -10,
# then to normal priority without CAP_SYS_NICE; the JSON says which they
# got). --clock-normal measures the unprivileged case.
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n 20000 2>/dev/null || true
cargo build --release --example media_bench
exec ./target/release/examples/media_bench "$@"
