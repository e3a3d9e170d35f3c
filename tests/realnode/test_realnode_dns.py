"""The real node's cluster DNS: the wire format a stub resolver speaks, and which names exist."""

from __future__ import annotations

import socket
import struct
import threading

from litgpt_devcluster.realnode import dns


def query(name: str, qtype: int = dns.A, ident: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split("."))
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)


def answers(reply: bytes) -> tuple[int, list[str]]:
    """(rcode, A addresses) of a reply built by dns.build_answer."""
    _, flags, _, ancount, _, _ = struct.unpack("!HHHHHH", reply[:12])
    pos = 12
    while reply[pos]:
        pos += reply[pos] + 1
    pos += 5
    out = []
    for _ in range(ancount):
        _, _, _, _, length = struct.unpack("!HHHIH", reply[pos:pos + 12])
        out.append(socket.inet_ntoa(reply[pos + 12:pos + 12 + length]))
        pos += 12 + length
    return flags & 0xF, out


SERVICES = [
    {"metadata": {"name": "web", "namespace": "demo"}, "spec": {"clusterIP": "10.0.0.7"}},
    {"metadata": {"name": "train", "namespace": "demo"}, "spec": {"clusterIP": "None"}},
]
SLICES = [{"metadata": {"namespace": "demo", "labels": {"kubernetes.io/service-name": "train"}},
           "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": True}},
                         {"addresses": ["10.244.0.6"], "conditions": {"ready": False}}]}]
PODS = [
    {"metadata": {"namespace": "demo"}, "spec": {"hostname": "train-0", "subdomain": "train"},
     "status": {"podIP": "10.244.0.5"}},
    {"metadata": {"namespace": "demo"}, "spec": {"hostname": "train-1", "subdomain": "train"}, "status": {}},
]


def resolver() -> dns.Resolver:
    return dns.Resolver(lambda: (SERVICES, SLICES, PODS))


def test_records_follow_the_kubernetes_dns_names():
    table = dns.records(SERVICES, SLICES, PODS, "cluster.local")
    assert table["web.demo.svc.cluster.local"] == ["10.0.0.7"]
    assert table["train.demo.svc.cluster.local"] == ["10.244.0.5"]  # headless: ready pods only
    assert table["train-0.train.demo.svc.cluster.local"] == ["10.244.0.5"]
    assert "train-1.train.demo.svc.cluster.local" not in table  # no IP yet: no record


def test_answers_a_nxdomain_and_an_empty_aaaa():
    r = resolver()
    assert answers(r.answer(query("train-0.train.demo.svc.cluster.local"))) == (dns.NOERROR, ["10.244.0.5"])
    assert answers(r.answer(query("WEB.demo.svc.cluster.local"))) == (dns.NOERROR, ["10.0.0.7"])
    assert answers(r.answer(query("web.demo.svc.cluster.local", dns.AAAA))) == (dns.NOERROR, [])
    assert answers(r.answer(query("nope.demo.svc.cluster.local"))) == (dns.NXDOMAIN, [])
    # names outside the cluster domain: no upstream to ask, nothing resolves
    assert answers(r.answer(query("pypi.org"))) == (dns.NXDOMAIN, [])
    reply = r.answer(query("web.demo.svc.cluster.local", ident=0xBEEF))
    assert reply[:2] == b"\xbe\xef"


def test_garbage_gets_a_format_error_or_nothing():
    r = resolver()
    assert r.answer(b"\x01") is None
    assert struct.unpack("!HH", r.answer(b"\x00\x07" + b"\0" * 10)[:4]) == (7, 0x8000 | dns.FORMERR)


def test_a_real_resolver_gets_its_answer_over_udp():
    stopping = threading.Event()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = threading.Thread(target=dns.serve, args=(resolver(), "127.0.0.1", port, stopping), daemon=True)
    server.start()
    try:
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(5)
        for _ in range(20):  # the server thread binds a moment after starting
            client.sendto(query("web.demo.svc.cluster.local"), ("127.0.0.1", port))
            try:
                reply, _ = client.recvfrom(512)
                break
            except socket.timeout:
                continue
        assert answers(reply) == (dns.NOERROR, ["10.0.0.7"])
    finally:
        stopping.set()
        server.join(5)
