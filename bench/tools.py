#!/usr/bin/env python3
"""Small helpers for bench/*.sh (python3 standard library only).

  tools.py render TEMPLATE OUT KEY=VALUE...   replace @KEY@ in TEMPLATE, write OUT
  tools.py connects SOCKET                    exit 0 if a Unix socket accepts a connection
  tools.py mem PID...                         per PID, summed over its process tree (KiB):
                                              "pid VmRSS VmHWM Pss Private threads RssAnon RssFile"
                                              (Private = Private_Clean + Private_Dirty: USS)
  tools.py cpu PID...                         per PID, summed over its process tree: "pid ticks",
                                              utime + stime from /proc/PID/stat (all threads) in
                                              clock ticks (getconf CLK_TCK); "pid NA" if PID is gone
  tools.py sign SECRET ID                     lowercase hex HMAC-SHA256(SECRET, ID)
  tools.py get URL [HEADER: VALUE]...         one GET (URL http://127.0.0.1:P/... or
                                              unix:/path:/...); prints the status, then the body
  tools.py poke COUNT PORT...                 COUNT GETs of /latest/meta-data/ to each
                                              127.0.0.1:PORT, a new connection each; prints
                                              "ok=N failed=M"
  tools.py fill SOCKET ROUTER FIRST COUNT CONNS
                                              COUNT requests through an agent's Unix socket,
                                              one distinct X-Forwarded-For (10.x.y.z, from
                                              index FIRST) each, CONNS keep-alive connections;
                                              prints "ok=N other=M statuses={...} seconds=S"
"""
import asyncio
import hashlib
import hmac
import http.client
import os
import socket
import sys
import time


def render(template, out, *pairs):
    text = open(template).read()
    for kv in pairs:
        k, _, v = kv.partition("=")
        text = text.replace("@" + k + "@", v)
    if "@" in text:
        import re
        left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
        if left:
            sys.exit("render: unreplaced placeholders %s in %s" % (left, template))
    with open(out, "w") as f:
        f.write(text)


def connects(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(path)
    except OSError:
        sys.exit(1)
    finally:
        s.close()


def _tree(pid):
    out = [pid]
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for t in tasks:
        try:
            kids = open("/proc/%d/task/%s/children" % (pid, t)).read().split()
        except OSError:
            continue
        for k in kids:
            out.extend(_tree(int(k)))
    return out


def _fields(path, names):
    vals = {}
    try:
        for line in open(path):
            k, _, rest = line.partition(":")
            if k in names:
                vals[k] = int(rest.split()[0])
    except OSError:
        pass
    return vals


def mem(*pids):
    for p in pids:
        rss = hwm = pss = uss = thr = anon = fil = 0
        for q in _tree(int(p)):
            st = _fields("/proc/%d/status" % q, ("VmRSS", "VmHWM", "Threads", "RssAnon", "RssFile"))
            rss += st.get("VmRSS", 0)
            anon += st.get("RssAnon", 0)
            fil += st.get("RssFile", 0)
            hwm += st.get("VmHWM", 0)
            thr += st.get("Threads", 0)
            sm = _fields("/proc/%d/smaps_rollup" % q, ("Pss", "Private_Clean", "Private_Dirty"))
            pss += sm.get("Pss", 0)
            uss += sm.get("Private_Clean", 0) + sm.get("Private_Dirty", 0)
        print(p, rss, hwm, pss, uss, thr, anon, fil)


def _ticks(pid):
    """utime + stime of one process (all its threads) in clock ticks; None if it is gone."""
    try:
        stat = open("/proc/%d/stat" % pid).read()
    except OSError:
        return None
    f = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3, utime 14, stime 15
    if f[0] in ("Z", "X"):
        return None
    return int(f[11]) + int(f[12])


def cpu(*pids):
    for p in pids:
        total = _ticks(int(p))
        if total is not None:
            total += sum(_ticks(q) or 0 for q in _tree(int(p))[1:])
        print(p, "NA" if total is None else total)


def sign(secret, ident):
    print(hmac.new(secret.encode(), ident.encode(), hashlib.sha256).hexdigest())


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=5):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def _conn(url):
    """http://HOST:PORT/path or unix:/sock/path:/http/path -> (connection, path)."""
    if url.startswith("unix:"):
        sock, _, path = url[5:].partition(":")
        return UnixHTTPConnection(sock), path
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    return http.client.HTTPConnection(host, int(port or 80), timeout=5), "/" + path


def get(url, *headers):
    c, path = _conn(url)
    hdrs = {}
    for h in headers:
        k, _, v = h.partition(":")
        hdrs[k.strip()] = v.strip()
    try:
        c.request("GET", path, headers=hdrs)
        r = c.getresponse()
        body = r.read()
        print(r.status)
        sys.stdout.write(body.decode("utf-8", "replace"))
    except (OSError, http.client.HTTPException) as e:
        print("000")
        print("error: %s" % e)


def poke(count, *ports):
    ok = failed = 0
    for port in ports:
        for _ in range(int(count)):
            c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
            try:
                c.request("GET", "/latest/meta-data/", headers={"Connection": "close"})
                r = c.getresponse()
                r.read()
                ok += r.status == 200
                failed += r.status != 200
            except (OSError, http.client.HTTPException):
                failed += 1
            finally:
                c.close()
    print("ok=%d failed=%d" % (ok, failed))


def ip_of(n):
    return "10.%d.%d.%d" % ((n >> 16) & 255, (n >> 8) & 255, n & 255)


async def _read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, close = 0, False
    for line in lines[1:]:
        k, _, v = line.partition(":")
        k = k.strip().lower()
        if k == "content-length":
            length = int(v)
        elif k == "connection" and "close" in v.lower():
            close = True
    if length:
        await reader.readexactly(length)
    return status, close


async def _fill(path, router, first, count, conns):
    todo = iter(range(first, first + count))
    statuses = {}

    async def worker():
        reader = writer = None
        for n in todo:
            for attempt in range(3):
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_unix_connection(path)
                    writer.write(("GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n"
                                  "X-Forwarded-For: %s\r\nX-Neutron-Router-ID: %s\r\n\r\n"
                                  % (ip_of(n), router)).encode())
                    status, close = await asyncio.wait_for(_read_response(reader), 30)
                    statuses[status] = statuses.get(status, 0) + 1
                    if close:
                        writer.close()
                        writer = None
                    break
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                    if writer is not None:
                        writer.close()
                    writer = None
            else:
                statuses["error"] = statuses.get("error", 0) + 1
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(conns)))
    return statuses


def fill(path, router, first, count, conns):
    t = time.monotonic()
    statuses = asyncio.run(_fill(path, router, int(first), int(count), int(conns)))
    ok = statuses.get(200, 0)
    print("ok=%d other=%d statuses=%s seconds=%.1f"
          % (ok, sum(statuses.values()) - ok, statuses, time.monotonic() - t))


COMMANDS = {"render": render, "connects": connects, "mem": mem, "cpu": cpu, "sign": sign, "get": get,
            "poke": poke, "fill": fill}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
