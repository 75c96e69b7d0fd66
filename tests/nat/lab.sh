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
# The "internet" is a bridge in namespace PREFIXinet, on 203.0.114.0/24:
# an ordinary public range, never routed beyond the lab's namespaces
# (miniupnpd refuses to map on a reserved one such as TEST-NET-3). A SITE
# is NAME:TYPE[:MBIT]:
#   public           a host on the internet itself (203.0.114.10+i)
#   full-cone        a home router (wan 203.0.114.100+i) that maps a host's
#                    UDP port to the same port outside (as masquerading
#                    does when the port is free) and lets anyone send to it
#   port-restricted  a typical home router: the same mapping, but only the
#                    exact address and port the host sent to may answer
#                    (conntrack's established and related traffic)
#   symmetric        a router whose mapping changes with every destination
#                    (masquerade random): nobody else can use it
#   upnp             port-restricted, and running a real miniupnpd that
#                    maps ports on request over UPnP IGD, NAT-PMP and PCP
#                    (its log: /run/PREFIXrt-NAME.miniupnpd.log); PCP
#                    grants 20 s at most, so that tests see renewals
# The host behind site i's router is 10.i.0.2 in namespace PREFIXh-NAME;
# the router is PREFIXrt-NAME. MBIT, if given, limits the site's uplink
# and downlink (the router's wan and lan egress) with tbf, each to MBIT.
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
            local addr="203.0.114.$((10 + i))"
            ip -n "$inet" link add "s$i" type veth peer name eth0 netns "$host"
            ip -n "$inet" link set "s$i" master br0 up
            ip -n "$host" addr add "$addr/24" dev eth0
            ip -n "$host" link set eth0 up
            echo "$name $host $addr $addr"
            continue
        fi
        local rt="${p}rt-$name" wan="203.0.114.$((100 + i))" lan="10.$i.0"
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
            upnp) upnp_site "$p" "$rt" "$name" "$lan" "$wan"; shape "$rt" "${mbit:-}"; echo "$name $host $lan.2 $wan"; continue ;;
            *) echo "lab.sh: $spec: the type is public, full-cone, port-restricted, symmetric or upnp" >&2; exit 2 ;;
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
        shape "$rt" "${mbit:-}"
        echo "$name $host $lan.2 $wan"
    done
}

# Limits the uplink and the downlink of router namespace $1 to $2 Mbit/s
# each (none if empty): tbf on the wan's egress (what the site sends) and
# on the lan's (what it receives).
shape() {
    if [ -n "$2" ]; then
        ip netns exec "$1" tc qdisc add dev wan0 root tbf rate "$2mbit" burst 64kb latency 50ms
        ip netns exec "$1" tc qdisc add dev lan0 root tbf rate "$2mbit" burst 64kb latency 50ms
    fi
}

# A port-restricted router that runs miniupnpd. miniupnpd (the nftables
# build) fills chains of its own in `table inet filter`, each jumped to
# from a base chain: `miniupnpd` (forward), `prerouting_miniupnpd` (its
# DNATs) and `postrouting_miniupnpd` (SNATs that keep a mapped port).
upnp_site() {
    local p=$1 rt=$2 name=$3 lan=$4 wan=$5
    ip netns exec "$rt" nft -f - <<NFT
table inet filter {
    chain forward {
        type filter hook forward priority filter; policy drop;
        jump miniupnpd
        iifname "lan0" accept
        ct state established,related accept
    }
    chain input {
        type filter hook input priority filter; policy drop;
        iifname { "lo", "lan0" } accept
        ct state established,related accept
    }
    chain miniupnpd {
    }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        jump prerouting_miniupnpd
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        jump postrouting_miniupnpd
        oifname "wan0" masquerade
    }
    chain prerouting_miniupnpd {
    }
    chain postrouting_miniupnpd {
    }
}
NFT
    # SSDP discovery is multicast, sent and answered on the lan.
    ip -n "$rt" route add 239.0.0.0/8 dev lan0
    local conf="/run/${rt}.miniupnpd.conf" idx=${lan#10.}
    idx=${idx%.0}
    cat > "$conf" <<CONF
ext_ifname=wan0
listening_ip=lan0
port=0
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=yes
min_lifetime=10
max_lifetime=20
uuid=3e1c8a9e-16a0-4d2b-9a53-$(printf '%012d' "$idx")
allow 1024-65535 $lan.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
CONF
    ip netns exec "$rt" setsid miniupnpd -f "$conf" -d -P "/run/${rt}.miniupnpd.pid" \
        > "/run/${rt}.miniupnpd.log" 2>&1 < /dev/null &
    # Ready once it listens for NAT-PMP/PCP (UDP 5351) on the lan.
    for _ in $(seq 1 50); do
        if ip netns exec "$rt" ss -uln 2>/dev/null | grep -q ':5351 '; then return 0; fi
        sleep 0.1
    done
    echo "lab.sh: miniupnpd did not start in $rt; its log:" >&2
    cat "/run/${rt}.miniupnpd.log" >&2
    exit 1
}

down() {
    local p=$1
    for ns in $(ip netns list | awk '{print $1}' | grep -F -- "$p" || true); do
        case "$ns" in "$p"*) ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
                             ip netns del "$ns"
                             rm -f "/run/$ns.miniupnpd".* ;; esac
    done
}

case "${1:-}" in
    up) shift; [ $# -ge 2 ] || { echo "usage: lab.sh up PREFIX SITE..." >&2; exit 2; }; up "$@" ;;
    down) [ $# -eq 2 ] || { echo "usage: lab.sh down PREFIX" >&2; exit 2; }; down "$2" ;;
    *) echo "usage: lab.sh up PREFIX SITE... | lab.sh down PREFIX" >&2; exit 2 ;;
esac
