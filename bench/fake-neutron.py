#!/usr/bin/env python3
"""A tiny fake Neutron API (and a fixed-answer metadata server) for bench/agent-cache.sh.

  fake-neutron.py --neutron-port P [--metadata-port Q] [--network-id N] [--project-id T]

Neutron port P answers what `mdproxy agent --backend neutron` asks (no auth):
  GET /v2.0/ports?device_id=R&device_owner=...      -> one interface port on --network-id
  GET /v2.0/ports?fixed_ips=ip_address%3DIP&...     -> one port for ANY IP, with a device_id
                                                       derived from the IP (distinct per IP)
  GET /_stats                                       -> {"router_queries": n, "port_queries": n}
Metadata port Q, if given, answers every request 200 with a short listing (so the agent never
sees a 404 and never looks an instance up again past its cache); agent-cache.sh uses nginx.

HTTP/1.1 with keep-alive, asyncio, standard library only. Runs until killed.
"""
import argparse
import asyncio
import ipaddress
import json
from urllib.parse import parse_qs, urlsplit

STATS = {"router_queries": 0, "port_queries": 0, "other": 0, "metadata": 0}
LISTING = b"ami-id\nhostname\ninstance-id"


def device_id(ip):
    n = int(ipaddress.ip_address(ip))
    return "%08x-0000-4000-8000-%012x" % (n & 0xFFFFFFFF, n & 0xFFFFFFFFFFFF)


def neutron_answer(target, network_id, project_id):
    url = urlsplit(target)
    q = parse_qs(url.query)
    if url.path == "/_stats":
        return 200, json.dumps(STATS).encode()
    if url.path != "/v2.0/ports":
        STATS["other"] += 1
        return 404, b'{"NeutronError": "not found"}'
    if "device_id" in q:
        STATS["router_queries"] += 1
        return 200, json.dumps({"ports": [{"network_id": network_id}]}).encode()
    ips = [v.split("=", 1)[1] for v in q.get("fixed_ips", []) if v.startswith("ip_address=")]
    if ips:
        STATS["port_queries"] += 1
        port = {"device_id": device_id(ips[0]), "project_id": project_id, "tenant_id": project_id,
                "network_id": network_id}
        return 200, json.dumps({"ports": [port]}).encode()
    STATS["other"] += 1
    return 200, b'{"ports": []}'


def serve(kind, args):
    async def handle(reader, writer):
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                target = lines[0].split(" ")[1]
                close, length = False, 0
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    k = k.strip().lower()
                    if k == "connection" and "close" in v.lower():
                        close = True
                    elif k == "content-length":
                        length = int(v)
                if length:
                    await reader.readexactly(length)
                if kind == "neutron":
                    status, body = neutron_answer(target, args.network_id, args.project_id)
                    ctype = "application/json"
                else:
                    STATS["metadata"] += 1
                    status, body, ctype = 200, LISTING, "text/plain"
                writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
                             % (status, b"OK" if status == 200 else b"Not Found", ctype.encode(),
                                len(body), b"Connection: close\r\n" if close else b"") + body)
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()
    return handle


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--neutron-port", type=int, required=True)
    ap.add_argument("--metadata-port", type=int)
    ap.add_argument("--network-id", default="9c2b1a4e-0000-4000-8000-000000000001")
    ap.add_argument("--project-id", default="8f14e45fceea167a5a36dedd4bea2543")
    args = ap.parse_args()
    servers = [await asyncio.start_server(serve("neutron", args), "127.0.0.1", args.neutron_port,
                                          backlog=1024)]
    if args.metadata_port:
        servers.append(await asyncio.start_server(serve("metadata", args), "127.0.0.1",
                                                  args.metadata_port, backlog=1024))
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main())
