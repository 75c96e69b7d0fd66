#!/usr/bin/env bash
# Figures of issue 16 in the NAT lab (tests/nat/lab.sh; needs root,
# iproute2, nftables, conntrack and grpcurl, as tests/run.sh installs):
#   - goodput of a backup from a customer behind a port-restricted NAT with
#     an MBIT uplink and downlink (tbf) to two suppliers, and of the
#     restore of what it stored: public (direct), behind
#     port-restricted NATs (hole-punched) and behind symmetric NATs
#     (relayed by a public router): data and wire bytes per second as a
#     share of the link rate, the physical limit;
#   - the time from a supplier's start behind a NAT until a customer can
#     hire it: through a router, and through a port mapping its home
#     router (miniupnpd) keeps;
#   - the time until every supplier answers again after the NATs forget
#     every binding (conntrack -F), direct and relayed;
#   - what the router spends (CPU seconds, memory) on the relayed backup.
# Release binaries. Not a test: nothing here asserts a time.
# Usage: bash tests/bench/nat.sh [SIZE_MB] [MBIT]
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mb=${1:-64}
mbit=${2:-50}
source tests/bench/common.sh
devnet_build

P="bdb$$-"
work=$(mktemp -d /tmp/bitdust-nat.XXXXXX)
cleanup() {
    bash tests/nat/lab.sh down "$P" || true
    rm -rf "$work"
}
trap cleanup EXIT

bash tests/nat/lab.sh up "$P" a:public s1:public s2:public p1:port-restricted p2:port-restricted \
    y1:symmetric y2:symmetric cd:port-restricted:"$mbit" cp:port-restricted:"$mbit" \
    cr:port-restricted:"$mbit" m1:upnp cm:port-restricted > "$work/lab.txt"
ns() { awk -v n="$1" '$1 == n {print $2}' "$work/lab.txt"; }
addr() { awk -v n="$1" '$1 == n {print $3}' "$work/lab.txt"; }
now() { date +%s.%N; }

# start SITE DAEMON BODY: the daemon in the site's host, its config BODY.
start() {
    local d="$work/$1"
    mkdir -p "$d"
    printf 'run_dir = "%s/run"\nstate_dir = "%s/state"\n%s' "$d" "$d" "$3" > "$d/bitdust.toml"
    RUST_LOG=info ip netns exec "$(ns "$1")" "$R/$2" --config "$d/bitdust.toml" 2>>"$d/$2.log" &
    echo $! > "$d/$2.pid"
}
dht_status() {
    grpcurl -plaintext -unix -authority localhost "$work/$1/run/dht.sock" bitdust.dht.v1.Dht/Status 2>/dev/null
}
ctl() { local s=$1; shift; "$R/bitdustctl" --run-dir "$work/$s/run" "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
wait_for() { # wait_for SECS CMD...: until CMD succeeds
    local until=$(( $(date +%s) + $1 )); shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$until" ] || { echo "nat.sh: timed out: $*" >&2; exit 1; }
        sleep 0.2
    done
}

a=$(addr a)
start a bitdust-dht-peer "[dht]
listen = \"0.0.0.0:7900\"
[router]
enabled = true
listen = \"0.0.0.0:7910\"
advertise = \"$a:7910\"
rate = \"64 MiB\"
burst = \"16 MiB\"
"
router_ready() { dht_status a | json "d['router']['address']" | grep -q .; }
wait_for 30 router_ready
router_id=$(dht_status a | json "d['nodeId']")
router="$router_id@$a:7910"
dht="[dht]
listen = \"0.0.0.0:7900\"
bootstrap = [\"$a:7900\"]
"
customer="[customer]
bind = \"0.0.0.0:0\"
suppliers = 2
needed_space = \"4 GiB\"
timeout_secs = 10
hire_from_dht = false
"
for c in cd cp cr cm; do
    start "$c" bitdust-dht-peer "$dht$customer"
    start "$c" bitdust-customer-agent "$dht$customer"
done
supplier() { # supplier SITE: its dht-peer and supplier-store
    local reach="routers = [\"$router\"]"
    case "$1" in
        s*) reach="advertise = \"$(addr "$1"):7800\"" ;;
        m*) reach="" ;; # it maps a port, and finds the router in the DHT
    esac
    local body="$dht[supplier]
listen = \"0.0.0.0:7800\"
capacity = \"16 GiB\"
$reach
"
    start "$1" bitdust-dht-peer "$body"
    start "$1" bitdust-supplier-store "$body"
}
# contact SITE: how a customer dials it (as its offer says).
contact() {
    local id
    id=$(cat "$work/$1/state/supplier/node-id" 2>/dev/null) || return 1
    case "$1" in
        s*) echo "$id@$(addr "$1"):7800" ;;
        m*)
            # Its offer's address, once a router's dial-back confirmed it.
            local st
            st=$(grpcurl -plaintext -unix -authority localhost "$work/$1/run/supplier.sock" \
                bitdust.supplier.v1.Supplier/Status 2>/dev/null) || return 1
            echo "$st" | json "d.get('reachability', '')" | grep -q '^mapped: reachable' || return 1
            echo "$id@$(echo "$st" | json "d['address']")"
            ;;
        *)
            local seen
            seen=$(dht_status a | python3 -c "import json,sys; d=json.load(sys.stdin)
print(next((c['address'] for c in d['router'].get('clients', []) if c['nodeId'] == '$id' and c.get('reserved')), ''))")
            [ -n "$seen" ] || return 1
            echo "$id@$seen via $router"
            ;;
    esac
}
hire() { # hire CUSTOMER POSITION SITE
    local c
    c=$(contact "$3") || return 1
    ctl "$1" suppliers hire --position "$2" "$c" >/dev/null 2>&1
}

# A supplier behind a port-restricted NAT, from its start until a customer
# hires it (its reservation on the router, then the hire through it).
t0=$(now)
supplier p1
wait_for 120 hire cp 0 p1
t_hire=$(calc "$(now) - $t0")
# A supplier whose home router maps its port (UPnP IGD, NAT-PMP, PCP), from
# its start until a customer hires it at the mapped address.
t0=$(now)
supplier m1
wait_for 120 hire cm 0 m1
t_hire_mapped=$(calc "$(now) - $t0")
mapped_how=$(grpcurl -plaintext -unix -authority localhost "$work/m1/run/supplier.sock" \
    bitdust.supplier.v1.Supplier/Status | json "d['portMapping']")
mapped_path=$(ctl cm --json suppliers | json "' '.join(s['path'].split(' ')[0] for s in d['suppliers'] if s['node_id'])")
for s in s1 s2 p2 y1 y2; do supplier "$s"; done
wait_for 120 hire cd 0 s1
wait_for 120 hire cd 1 s2
wait_for 120 hire cp 1 p2
wait_for 120 hire cr 0 y1
wait_for 120 hire cr 1 y2

mkdir -p "$work/data"
head -c $((size_mb << 20)) /dev/urandom > "$work/data/random.bin"
cpu_of() { awk '{print $14 + $15}' "/proc/$(cat "$work/a/bitdust-dht-peer.pid")/stat"; }
rss_of() { awk '/VmRSS/ {print $2}' "/proc/$(cat "$work/a/bitdust-dht-peer.pid")/status"; }
tick=$(getconf CLK_TCK)
declare -A share wire paths rshare eff pkt
# The bytes and packets a router sent on its wan (what tbf counts).
wan_tx() {
    ip -n "${P}rt-$1" -j -s link show wan0 |
        python3 -c "import json,sys; s=json.load(sys.stdin)[0]['stats64']['tx']; print(s['bytes'], s['packets'])"
}
for c in cd cp cr; do
    cpu0=$(cpu_of); rss0=$(rss_of)
    read -r tx0 pk0 <<<"$(wan_tx "$c")"
    ctl "$c" --json backup "$work/data" > "$work/$c.backup.json"
    read -r tx1 pk1 <<<"$(wan_tx "$c")"
    cpu1=$(cpu_of); rss1=$(rss_of)
    # Of what crossed the uplink, the share that was fragments: the rest is
    # QUIC, UDP, IP and Ethernet headers, and the requests around them.
    eff[$c]=$(calc "$(json "d['stored_bytes']" < "$work/$c.backup.json") / ($tx1 - $tx0)")
    pkt[$c]=$(calc "($tx1 - $tx0) / ($pk1 - $pk0)")
    secs=$(json "d['seconds']" < "$work/$c.backup.json")
    stored=$(json "d['stored_bytes']" < "$work/$c.backup.json")
    share[$c]=$(calc "$size_mb * 8388608 / $secs / ($mbit * 1000000)")
    wire[$c]=$(calc "$stored * 8 / $secs / ($mbit * 1000000)")
    paths[$c]=$(ctl "$c" --json suppliers | json "' '.join(s['path'].split(' ')[0] for s in d['suppliers'])")
    if [ "$c" = cr ]; then
        router_cpu=$(calc "($cpu1 - $cpu0) / $tick")
        router_rss_kib=$((rss1 - rss0))
        relayed_mib=$(calc "$stored / 1048576")
        router_rss=$rss1
    fi
    echo "backup from $c: ${secs} s; paths: ${paths[$c]}"
    # The restore of what it just stored, through the site's downlink
    # (fragments of one position per block cross it: the data once).
    id=$(json "f\"{d['backup_id']}@{d['version']}\"" < "$work/$c.backup.json")
    t0=$(now)
    ctl "$c" restore --quiet "$id" --to "$work/$c.out"
    rsecs=$(calc "$(now) - $t0")
    cmp "$work/data/random.bin" "$work/$c.out$work/data/random.bin" || { echo "nat.sh: the restore from $c differs" >&2; exit 1; }
    rm -rf "$work/$c.out"
    rshare[$c]=$(calc "$size_mb * 8388608 / $rsecs / ($mbit * 1000000)")
    echo "restore to $c: ${rsecs} s"
done

# Every binding forgotten; then until both suppliers answer a ping again.
reachable() { [ "$(ctl "$1" --json suppliers | json "sum(s['reachable'] for s in d['suppliers'])")" = 2 ]; }
flush_and_wait() { # flush_and_wait CUSTOMER SUPPLIER_SITES...
    local c=$1; shift
    for s in "$c" "$@"; do
        case "$s" in s*) ;; *) ip netns exec "${P}rt-$s" conntrack -F >/dev/null 2>&1 ;; esac
    done
    local t=$(now)
    wait_for 60 reachable "$c"
    calc "$(now) - $t"
}
back_direct=$(flush_and_wait cd s1 s2)
back_punched=$(flush_and_wait cp p1 p2)
back_relayed=$(flush_and_wait cr y1 y2)

cat <<EOF
NAT lab, a ${size_mb} MiB backup (random) from a port-restricted site with a ${mbit} Mbit/s uplink and downlink, 2 suppliers:
  path                     data/link  wire/link  restore data/link  (wire: the 2 fragments of each byte, as sent)
  direct (public)          ${share[cd]}  ${wire[cd]}  ${rshare[cd]}   paths: ${paths[cd]}
  hole-punched (pr NATs)   ${share[cp]}  ${wire[cp]}  ${rshare[cp]}   paths: ${paths[cp]}
  relayed (symmetric NATs) ${share[cr]}  ${wire[cr]}  ${rshare[cr]}   paths: ${paths[cr]}
the uplink during each backup: bytes per frame sent, and the fragments' share of them (the most wire/link can reach):
  direct ${pkt[cd]} B, ${eff[cd]}; hole-punched ${pkt[cp]} B, ${eff[cp]}; relayed ${pkt[cr]} B, ${eff[cr]}
a supplier behind a port-restricted NAT, from its start to a customer's hire: ${t_hire} s (through the router)
a supplier behind a port-restricted NAT with miniupnpd, from its start to a customer's hire: ${t_hire_mapped} s (path: ${mapped_path}; ${mapped_how})
every supplier answering again after conntrack -F: direct ${back_direct} s, hole-punched ${back_punched} s, relayed ${back_relayed} s
the router on the relayed backup (2 relayed connections, ${relayed_mib} MiB of fragments): ${router_cpu} CPU-s, RSS ${router_rss} KiB (+${router_rss_kib} KiB)
EOF
