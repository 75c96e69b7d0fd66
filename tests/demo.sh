#!/usr/bin/env bash
# The main job, for real: a local network of separate processes on loopback
# (one customer-agent, 7 supplier-stores, QUIC between them), a backup of a
# sample tree through bitdustctl, kill -9 of 3 suppliers (the 7-supplier
# map's tolerance), a restore, and a bit-exact check. Pass a PATH to back up
# something else. (tests/demo-local.sh is the offline variant.)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# Every binary the devnet starts: the dht-peer (seed and one per node), the
# supplier-store, the customer-agent and the rebuilder, and bitdustctl.
cargo build --quiet -p bitdust-devnet -p bitdustctl -p bitdust-dht-peer \
    -p bitdust-supplier-store -p bitdust-customer-agent -p bitdust-rebuilder
exec "$CARGO_TARGET_DIR/debug/bitdust-devnet" demo "$@"
