#!/usr/bin/env python3
"""UDP probes for the NAT lab (tests/nat/lab.sh), run inside its namespaces.

  probe.py echo PORT            answer every datagram with the address it
                                came from, as JSON {"seen": [ip, port]}
  probe.py send SRCPORT IP PORT TEXT
                                one datagram TEXT from SRCPORT to IP:PORT
  probe.py client SRCPORT WAIT IP PORT [IP PORT ...]
                                from one socket on SRCPORT, ask each echo
                                server where it sees us, print
                                {"seen": [[ip, port], ...]}, then print
                                {"got": [ip, port], "text": TEXT} for every
                                datagram that arrives within WAIT seconds,
                                then {"end": true}
  probe.py punch SRCPORT WAIT IP PORT
                                hole punching: from SRCPORT, send to IP:PORT
                                every 50 ms for WAIT seconds, and answer
                                whatever arrives from IP (at any port: a
                                symmetric NAT's mapping toward us is not the
                                one others saw); print {"from": [ip, port]}
                                for the first datagram from IP, or
                                {"from": null}
"""
import json
import socket
import sys
import time


def out(obj):
    print(json.dumps(obj), flush=True)


def echo(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        _, addr = s.recvfrom(2048)
        s.sendto(json.dumps({"seen": list(addr)}).encode(), addr)


def send(src, ip, port, text):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", src))
    s.sendto(text.encode(), (ip, port))


def client(src, wait, servers):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", src))
    seen = []
    for ip, port in servers:
        s.settimeout(0.5)
        for _ in range(10):
            s.sendto(b"where", (ip, port))
            try:
                data, addr = s.recvfrom(2048)
            except socket.timeout:
                continue
            if addr == (ip, port):
                seen.append(json.loads(data)["seen"])
                break
        else:
            seen.append(None)
    out({"seen": seen})
    end = time.monotonic() + wait
    while (left := end - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            data, addr = s.recvfrom(2048)
        except socket.timeout:
            break
        out({"got": list(addr), "text": data.decode(errors="replace")})
    out({"end": True})


def punch(src, wait, ip, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", src))
    first = None
    targets = {(ip, port)}
    end = time.monotonic() + wait
    while time.monotonic() < end:
        for t in targets:
            s.sendto(b"punch", t)
        s.settimeout(0.05)
        try:
            _, addr = s.recvfrom(2048)
        except socket.timeout:
            continue
        if addr[0] == ip:
            first = first or list(addr)
            targets.add(addr)
    out({"from": first})


def main(argv):
    if len(argv) == 2 and argv[0] == "echo":
        echo(int(argv[1]))
    elif len(argv) == 5 and argv[0] == "send":
        send(int(argv[1]), argv[2], int(argv[3]), argv[4])
    elif len(argv) == 5 and argv[0] == "punch":
        punch(int(argv[1]), float(argv[2]), argv[3], int(argv[4]))
    elif len(argv) >= 5 and argv[0] == "client" and len(argv) % 2 == 1:
        pairs = [(argv[i], int(argv[i + 1])) for i in range(3, len(argv), 2)]
        client(int(argv[1]), float(argv[2]), pairs)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
