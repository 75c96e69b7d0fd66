#!/usr/bin/env bash
# The NAT lab (issue 16): real NATs on one machine, built from network
# namespaces, veth pairs and nftables. Every packet stays inside the
# namespaces this script creates; nothing is added to the namespace it
# runs in.
#
#   lab.sh up PREFIX SITE...     build the lab; prints one line per site:
#                                NAME NAMESPACE ADDRESS PUBLIC (the host's
#                                address, and the one the internet sees:
#                                the same for a public host, else the
#                                router's)
#   lab.sh down PREFIX           remove every namespace named PREFIX*
#
# The "internet" is a bridge in namespace PREFIXinet, on 203.0.113.0/24
# (TEST-NET-3). A SITE is NAME:TYPE[:MBIT]:
#   public           a host on the internet itself (203.0.113.10+i)
#   full-cone        a home router (wan 203.0.113.100+i) that maps a host's
#                    UDP port to the same port outside (as masquerading
#                    does when the port is free) and lets anyone send to it
#   port-restricted  a typical home router: the same mapping, but only the
#                    exact address and port the host sent to may answer
#                    (conntrack's established and related traffic)
#   symmetric        a router whose mapping changes with every destination
#                    (masquerade random): nobody else can use it
# The host behind site i's router is 10.i.0.2 in namespace PREFIXh-NAME;
# the router is PREFIXrt-NAME. MBIT, if given, limits the site's uplink
# (the router's wan egress) with tbf.
set -euo pipefail

up() {
    local p=$1; shift
    local inet="${p}inet"
    ip netns add "$inet"
    ip -n "$inet" link set lo up
    ip -n "$inet" link add br0 type bridge
    ip -n "$inet" link set br0 up
    local i=0
    for spec in "$@"; do
        i=$((i + 1))
        IFS=: read -r name type mbit <<< "$spec"
        local host="${p}h-$name"
        ip netns add "$host"
        ip -n "$host" link set lo up
        if [ "$type" = public ]; then
            local addr="203.0.113.$((10 + i))"
            ip -n "$inet" link add "s$i" type veth peer name eth0 netns "$host"
            ip -n "$inet" link set "s$i" master br0 up
            ip -n "$host" addr add "$addr/24" dev eth0
            ip -n "$host" link set eth0 up
            echo "$name $host $addr $addr"
            continue
        fi
        local rt="${p}rt-$name" wan="203.0.113.$((100 + i))" lan="10.$i.0"
        ip netns add "$rt"
        ip -n "$rt" link set lo up
        ip -n "$inet" link add "s$i" type veth peer name wan0 netns "$rt"
        ip -n "$inet" link set "s$i" master br0 up
        ip -n "$rt" addr add "$wan/24" dev wan0
        ip -n "$rt" link set wan0 up
        ip -n "$rt" link add lan0 type veth peer name eth0 netns "$host"
        ip -n "$rt" addr add "$lan.1/24" dev lan0
        ip -n "$rt" link set lan0 up
        ip -n "$host" addr add "$lan.2/24" dev eth0
        ip -n "$host" link set eth0 up
        ip -n "$host" route add default via "$lan.1"
        ip netns exec "$rt" sysctl -qw net.ipv4.ip_forward=1
        local snat="masquerade" inbound=""
        case "$type" in
            full-cone) inbound="iifname \"wan0\" meta l4proto udp udp dport 1024-65535 dnat to $lan.2" ;;
            port-restricted) ;;
            symmetric) snat="masquerade random" ;;
            *) echo "lab.sh: $spec: the type is public, full-cone, port-restricted or symmetric" >&2; exit 2 ;;
        esac
        ip netns exec "$rt" nft -f - <<NFT
table ip nat {
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        $inbound
    }
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan0" $snat
    }
}
table ip filter {
    chain forward {
        type filter hook forward priority filter; policy drop;
        iifname "lan0" accept
        ct state established,related accept
        ct status dnat accept
    }
    chain input {
        type filter hook input priority filter; policy drop;
        iifname { "lo", "lan0" } accept
        ct state established,related accept
    }
}
NFT
        if [ -n "${mbit:-}" ]; then
            ip netns exec "$rt" tc qdisc add dev wan0 root tbf rate "${mbit}mbit" burst 64kb latency 50ms
        fi
        echo "$name $host $lan.2 $wan"
    done
}

down() {
    local p=$1
    for ns in $(ip netns list | awk '{print $1}' | grep -F -- "$p" || true); do
        case "$ns" in "$p"*) ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
                             ip netns del "$ns" ;; esac
    done
}

case "${1:-}" in
    up) shift; [ $# -ge 2 ] || { echo "usage: lab.sh up PREFIX SITE..." >&2; exit 2; }; up "$@" ;;
    down) [ $# -eq 2 ] || { echo "usage: lab.sh down PREFIX" >&2; exit 2; }; down "$2" ;;
    *) echo "usage: lab.sh up PREFIX SITE... | lab.sh down PREFIX" >&2; exit 2 ;;
esac
