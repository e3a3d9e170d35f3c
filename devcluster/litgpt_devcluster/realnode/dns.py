"""The cluster's DNS for the real node: A records of Services and of pods with a subdomain.

The names Kubernetes' DNS specification gives (what CoreDNS's `kubernetes` plugin answers):
    <service>.<namespace>.svc.cluster.local             the ClusterIP (headless: the pods' IPs)
    <hostname>.<subdomain>.<namespace>.svc.cluster.local a pod with spec.hostname/subdomain
Multi-node training needs the second kind (MASTER_ADDR is `<job>-0.<headless service>`).
Nothing else resolves: there is no upstream, as nothing outside the node's network namespace
may be reached. UDP only; the answers are a few dozen bytes.

    python -m litgpt_devcluster.realnode.dns --kubeconfig K --listen 10.250.0.1:53
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import struct
import threading
import time
from typing import Callable

log = logging.getLogger("realnode.dns")

A, AAAA, CLASS_IN = 1, 28, 1
NOERROR, FORMERR, NXDOMAIN = 0, 1, 3
TTL_S = 5


# --- the wire format (RFC 1035), just what a stub resolver asks ------------------------------

def parse_query(packet: bytes) -> tuple[int, int, str, int, bytes]:
    """(id, flags, name, qtype, question bytes) of a one-question query; ValueError otherwise."""
    if len(packet) < 12:
        raise ValueError("short packet")
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if qdcount != 1:
        raise ValueError("one question expected")
    labels, pos = [], 12
    while True:
        if pos >= len(packet):
            raise ValueError("truncated name")
        length = packet[pos]
        pos += 1
        if length == 0:
            break
        if length & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(packet[pos:pos + length].decode("ascii", "replace"))
        pos += length
    if pos + 4 > len(packet):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack("!HH", packet[pos:pos + 4])
    return ident, flags, ".".join(labels).lower(), qtype, packet[12:pos + 4]


def build_answer(ident: int, flags: int, question: bytes, rcode: int, addresses: list[str]) -> bytes:
    """A response: the question echoed, one A record per address (name by pointer to it)."""
    # QR, the query's opcode and RD, AA (we are the authority for the cluster domain), RA off.
    out_flags = 0x8000 | (flags & 0x7900) | 0x0400 | rcode
    header = struct.pack("!HHHHHH", ident, out_flags, 1, len(addresses), 0, 0)
    answers = b"".join(
        struct.pack("!HHHIH", 0xC00C, A, CLASS_IN, TTL_S, 4) + socket.inet_aton(ip) for ip in addresses
    )
    return header + question + answers


# --- the records ------------------------------------------------------------------------------

def records(services: list[dict], slices: list[dict], pods: list[dict], domain: str) -> dict[str, list[str]]:
    """Name -> addresses from the API's objects (plain dicts, as `kubectl get -o json` gives)."""
    out: dict[str, list[str]] = {}
    by_service: dict[tuple[str, str], list[str]] = {}
    for piece in slices:
        meta = piece["metadata"]
        service = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        if not service:
            continue
        for endpoint in piece.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            by_service.setdefault((meta["namespace"], service), []).extend(endpoint.get("addresses") or [])
    for svc in services:
        meta, spec = svc["metadata"], svc["spec"]
        name = f"{meta['name']}.{meta['namespace']}.svc.{domain}"
        if spec.get("clusterIP") and spec["clusterIP"] != "None":
            out[name] = [spec["clusterIP"]]
        else:
            out[name] = sorted(set(by_service.get((meta["namespace"], meta["name"]), [])))
    for pod in pods:
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
        if spec.get("hostname") and spec.get("subdomain") and status.get("podIP"):
            out[f"{spec['hostname']}.{spec['subdomain']}.{meta['namespace']}.svc.{domain}"] = [status["podIP"]]
    return out


class Resolver:
    """Answers from `records()` of objects `fetch()` returns, re-fetched at most every second."""

    def __init__(self, fetch: Callable[[], tuple[list, list, list]], domain: str = "cluster.local"):
        self.fetch = fetch
        self.domain = domain
        self._table: dict[str, list[str]] = {}
        self._at = 0.0
        self._lock = threading.Lock()

    def lookup(self, name: str) -> list[str] | None:
        """The addresses of `name`; None if no such name."""
        with self._lock:
            if time.monotonic() - self._at > 1.0 or name not in self._table:
                try:
                    self._table = records(*self.fetch(), self.domain)
                    self._at = time.monotonic()
                except Exception as error:  # the apiserver restarting must not kill the server
                    log.warning("could not list the cluster's objects: %s", error)
            return self._table.get(name.rstrip("."))

    def answer(self, packet: bytes) -> bytes | None:
        try:
            ident, flags, name, qtype, question = parse_query(packet)
        except ValueError:
            return None if len(packet) < 2 else struct.pack("!HHHHHH", packet[0] << 8 | packet[1], 0x8000 | FORMERR,
                                                           0, 0, 0, 0)
        addresses = self.lookup(name) if name.endswith(self.domain) else None
        if addresses is None:
            return build_answer(ident, flags, question, NXDOMAIN, [])
        # The name exists; it has A records only (AAAA and the rest: an empty answer).
        return build_answer(ident, flags, question, NOERROR, addresses if qtype == A else [])


def serve(resolver: Resolver, host: str, port: int, stopping: threading.Event | None = None) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    sock.settimeout(0.5)
    log.info("DNS for *.%s on %s:%d", resolver.domain, host, port)
    while stopping is None or not stopping.is_set():
        try:
            packet, peer = sock.recvfrom(4096)
        except socket.timeout:
            continue
        reply = resolver.answer(packet)
        if reply is not None:
            sock.sendto(reply, peer)
    sock.close()


def kube_fetch(kubeconfig: str) -> Callable[[], tuple[list, list, list]]:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)

    def fetch():
        items = lambda response: json.loads(response.data)["items"]  # noqa: E731 - plain dicts
        return (items(core.list_service_for_all_namespaces(_preload_content=False)),
                items(discovery.list_endpoint_slice_for_all_namespaces(_preload_content=False)),
                items(core.list_pod_for_all_namespaces(_preload_content=False)))

    return fetch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--listen", required=True, help="HOST:PORT (UDP)")
    parser.add_argument("--domain", default="cluster.local")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    host, port = args.listen.rsplit(":", 1)
    serve(Resolver(kube_fetch(args.kubeconfig), args.domain), host, int(port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
