#!/usr/bin/env bash
# Throughput of backup and restore through 7 suppliers on loopback (a
# bitdust-devnet of separate processes, QUIC between them) against
# `bitdustctl local backup/restore` of the same data into 7 local directories,
# in the same run, both with 1 MiB blocks (the devnet's block size). Prints
# MB/s (input bytes) and the ratio network / local.
# Not a test: nothing here asserts a time. Usage: bash tests/bench/network.sh [SIZE_MB]
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mb=${1:-300}
source tests/bench/common.sh
devnet_build

work=$(mktemp -d /tmp/bitdust-netbench.XXXXXX)
devnet_pid=
cleanup() {
    [ -n "$devnet_pid" ] && kill "$devnet_pid" 2>/dev/null && wait "$devnet_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# Input: 2/3 compressible text, 1/3 random bytes, in 10 MB files.
python3 tests/bench/make-input.py "$work/data" "$size_mb"
bytes=$(du -sb "$work/data" | cut -f1)

now() { date +%s.%N; }
rate() { python3 -c "import sys; print(f'{$bytes / ($2 - $1) / 1e6:.1f}')"; }

export BITDUST_KEYS="$work/keys"
t0=$(now); "$R/bitdustctl" local backup --quiet "$work/data" --to "$work/local" --suppliers 7 --block-size 1M; t1=$(now)
"$R/bitdustctl" local restore --quiet "$work/local" --to "$work/local-out"; t2=$(now)
local_backup=$(rate "$t0" "$t1"); local_restore=$(rate "$t1" "$t2")

devnet_up "$work/net" 7
t0=$(now); "$R/bitdustctl" backup --quiet "$work/data"; t1=$(now)
"$R/bitdustctl" restore --quiet --to "$work/net-out"; t2=$(now)
net_backup=$(rate "$t0" "$t1"); net_restore=$(rate "$t1" "$t2")
diff -r "$work/data" "$work/net-out$work/data" >/dev/null && echo "network restore: bit-exact"
# The same restore with the agent writing the files itself (RestoreRequest.to,
# through grpcurl) instead of streaming the archive to bitdustctl, if grpcurl
# is there.
agent_restore=
if command -v grpcurl >/dev/null; then
    t0=$(now)
    grpcurl -plaintext -authority localhost -d "{\"to\": \"$work/agent-out\"}" \
        -unix "$BITDUST_RUN_DIR/customer.sock" bitdust.customer.v1.Customer/Restore >/dev/null
    t1=$(now)
    agent_restore=$(rate "$t0" "$t1")
    diff -r "$work/data" "$work/agent-out$work/data" >/dev/null && echo "agent-written restore: bit-exact"
fi

echo "input: $bytes bytes ($size_mb MB requested; 1/3 random)"
printf '%-40s %8s MB/s\n' "local backup (7 directories)" "$local_backup" "network backup (7 suppliers, QUIC)" "$net_backup" \
    "local restore" "$local_restore" "network restore" "$net_restore"
python3 -c "print(f'ratio network/local: backup {$net_backup/$local_backup:.2f}x, restore {$net_restore/$local_restore:.2f}x')"
if [ -n "$agent_restore" ]; then
    printf '%-40s %8s MB/s\n' "network restore, the agent writes" "$agent_restore"
    python3 -c "print(f'ratio streamed to bitdustctl / agent writes: {$net_restore/$agent_restore:.2f}x')"
fi
