#!/usr/bin/env bash
# Rebuild throughput against restore throughput of the same version, in the
# same run: a bitdust-devnet of 7 suppliers and 1 spare (separate processes,
# QUIC over loopback, 1 MiB blocks); back SIZE_MB up, restore it (timed);
# kill -9 one supplier; the rebuilder fires it, hires the spare from the
# DHT and regenerates its position. The rebuild is timed from the rebuilder's
# own log: "hired a replacement" to "position rebuilt". Both rates are in
# input bytes of the version per second, so the ratio says how long making
# the version whole again takes next to reading it back once.
# One devnet per value of PARALLEL (the rebuilder's parallel_blocks).
# Not a test: nothing here asserts a time.
# Usage: bash tests/bench/rebuild.sh [SIZE_MB] ["PARALLEL ..."]
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mb=${1:-200}
parallel=${2:-1 4}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet -p bitdust-devnet -p bitdustctl -p bitdust-supplier-store \
    -p bitdust-customer-agent -p bitdust-dht-peer -p bitdust-rebuilder
R="$CARGO_TARGET_DIR/release"

work=$(mktemp -d /tmp/bitdust-rebuildbench.XXXXXX)
devnet_pid=
stop_devnet() {
    if [ -n "$devnet_pid" ]; then
        kill "$devnet_pid" 2>/dev/null || true
        wait "$devnet_pid" 2>/dev/null || true
        devnet_pid=
    fi
}
cleanup() {
    stop_devnet
    rm -rf "$work"
}
trap cleanup EXIT

# Input: 2/3 compressible text, 1/3 random bytes, in 10 MB files.
python3 tests/bench/make-input.py "$work/data" "$size_mb"
bytes=$(du -sb "$work/data" | cut -f1)
echo "input: $bytes bytes ($size_mb MB requested; 1/3 random)"

now() { date +%s.%N; }

for p in $parallel; do
    net="$work/net-$p"
    "$R/bitdust-devnet" up --dir "$net" --suppliers 7 --spare 1 --check-secs 2 \
        --parallel-blocks "$p" >/dev/null &
    devnet_pid=$!
    for _ in $(seq 900); do [ -f "$net/devnet.env" ] && break; sleep 0.1; done
    export BITDUST_RUN_DIR="$net/nodes/customer/run"
    "$R/bitdustctl" backup --quiet "$work/data"
    blocks=$("$R/bitdustctl" --json list | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["versions"][0]["blocks"])')
    t0=$(now); "$R/bitdustctl" restore --quiet --to "$work/out-$p"; t1=$(now)
    diff -r "$work/data" "$work/out-$p$work/data" >/dev/null
    rm -rf "$work/out-$p"
    kill -9 "$(cat "$net/nodes/supplier-3/bitdust-supplier-store.pid")"
    done_=
    for _ in $(seq 1200); do
        if grep -q "position rebuilt" "$net/nodes/customer/bitdust-rebuilder.log"; then done_=1; break; fi
        sleep 0.5
    done
    [ -n "$done_" ] || { echo "parallel_blocks $p: the rebuild did not finish in 10 minutes" >&2; exit 1; }
    status=$("$R/bitdustctl" --json rebuild status)
    # Three more die: only the rebuilt position makes the restore possible.
    for s in 0 1 5; do
        kill -9 "$(cat "$net/nodes/supplier-$s/bitdust-supplier-store.pid")"
    done
    "$R/bitdustctl" restore --quiet --to "$work/out-$p"
    diff -r "$work/data" "$work/out-$p$work/data" >/dev/null
    rm -rf "$work/out-$p"
    python3 - "$net/nodes/customer/bitdust-rebuilder.log" "$bytes" "$t0" "$t1" "$p" "$blocks" "$status" <<'PY'
import sys, json, re
from datetime import datetime
log, size, t0, t1, p, blocks, status = sys.argv[1:8]
size, t0, t1 = int(size), float(t0), float(t1)
st = json.loads(status)
def when(word):
    for line in open(log):
        if word in line:
            stamp = re.sub(r'\x1b\[[0-9;]*m', '', line).split()[0]
            return datetime.fromisoformat(stamp.replace('Z', '+00:00')).timestamp()
    raise SystemExit(f"no {word!r} in {log}")
hired, rebuilt = when("hired a replacement"), when("position rebuilt")
restore = size / (t1 - t0) / 1e6
rebuild = size / (rebuilt - hired) / 1e6
print(f"parallel_blocks {p}: {blocks} blocks; restore {restore:.1f} MB/s ({t1 - t0:.2f} s); "
      f"rebuild of 1 of 7 positions {rebuild:.1f} MB/s ({rebuilt - hired:.2f} s, "
      f"{st['blocks_rebuilt']} blocks, {st['bytes_uploaded'] / 1e6:.1f} MB uploaded); "
      f"ratio rebuild/restore {rebuild / restore:.2f}x; restore bit-exact after 3 more losses")
PY
    stop_devnet
    rm -rf "$net"
done
