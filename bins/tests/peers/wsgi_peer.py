"""A lenient real peer for bins/tests/lenient.rs: a WSGI app served by eventlet.wsgi or by the
standard library's wsgiref, on a Unix socket (as Neutron's metadata agent listens) or on
loopback TCP (as Nova's metadata API does).

It records every request its server parsed, as WSGI saw it (method, PATH_INFO, QUERY_STRING,
every HTTP_* environ key, CONTENT_LENGTH, the body), one JSON object per line appended to the
record file and flushed before the answer is written, so the test reads exactly what the
lenient parser made of the bytes mdproxy sent. Every answer names the identity it was given:

    answer-for <HTTP_X_FORWARDED_FOR> <HTTP_X_INSTANCE_ID or the scope header> <METHOD> <PATH>

so an answer delivered to the wrong instance is visible to the instance that got it.

Usage: wsgi_peer.py eventlet|wsgiref unix:PATH|tcp RECORD_FILE READY_FILE
Once listening it writes READY_FILE (the TCP port, or "unix") and serves until killed.
"""

import json
import os
import socket
import socketserver
import sys
import threading
import warnings

lock = threading.Lock()


def make_app(record_path):
    record = open(record_path, "a", encoding="utf-8")

    def app(environ, start_response):
        length = environ.get("CONTENT_LENGTH") or ""
        stream = environ["wsgi.input"]
        # eventlet decodes a chunked body itself; wsgiref reads only Content-Length bytes.
        if length.isdigit():
            body = stream.read(int(length))
        elif "eventlet.input" in environ or environ.get("HTTP_TRANSFER_ENCODING"):
            body = stream.read() if "eventlet.input" in environ else b""
        else:
            body = b""
        headers = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
        entry = {
            "method": environ["REQUEST_METHOD"],
            "path": environ.get("PATH_INFO", ""),
            "query": environ.get("QUERY_STRING", ""),
            "headers": headers,
            "content_length": environ.get("CONTENT_LENGTH") or None,
            "body": body.decode("latin-1"),
        }
        with lock:
            record.write(json.dumps(entry, sort_keys=True) + "\n")
            record.flush()
        who = (
            headers.get("HTTP_X_INSTANCE_ID")
            or headers.get("HTTP_X_NEUTRON_ROUTER_ID")
            or headers.get("HTTP_X_NEUTRON_NETWORK_ID")
            or "-"
        )
        answer = "answer-for %s %s %s %s" % (
            headers.get("HTTP_X_FORWARDED_FOR", "-"),
            who,
            entry["method"],
            entry["path"],
        )
        data = answer.encode("latin-1", "replace")
        start_response(
            "200 OK",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))],
        )
        return [data]

    return app


def ready(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def serve_eventlet(where, app, ready_file):
    # Importing eventlet warns that it is deprecated: true, and not the test's business.
    warnings.simplefilter("ignore")
    import eventlet
    import eventlet.wsgi

    class UnixProtocol(eventlet.wsgi.HttpProtocol):
        """A Unix socket peer has no address; Neutron's agent names it the same way."""

        def __init__(self, conn_state, server):
            if not conn_state[0]:
                conn_state[0] = ("<local>", 0)
            super().__init__(conn_state, server)

    if where.startswith("unix:"):
        sock = eventlet.listen(where[5:], family=socket.AF_UNIX)
        protocol, port = UnixProtocol, "unix"
    else:
        sock = eventlet.listen(("127.0.0.1", 0))
        protocol, port = eventlet.wsgi.HttpProtocol, str(sock.getsockname()[1])
    ready(ready_file, port)
    eventlet.wsgi.server(
        sock, app, protocol=protocol, log_output=False, keepalive=True, debug=False
    )


def serve_wsgiref(where, app, ready_file):
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class Quiet(WSGIRequestHandler):
        def setup(self):
            super().setup()
            if not self.client_address:
                self.client_address = ("local", 0)

        def address_string(self):
            return self.client_address[0]

        def log_message(self, *args):
            pass

    class ThreadingTcp(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class ThreadingUnix(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

        def __init__(self, path):
            super().__init__(path, Quiet)
            self.base_environ = {
                "SERVER_NAME": "local",
                "SERVER_PORT": "0",
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SCRIPT_NAME": "",
            }

        def get_app(self):
            return app

    if where.startswith("unix:"):
        server = ThreadingUnix(where[5:])
        port = "unix"
    else:
        server = ThreadingTcp(("127.0.0.1", 0), Quiet)
        server.set_app(app)
        port = str(server.server_address[1])
    ready(ready_file, port)
    server.serve_forever()


def main():
    kind, where, record_file, ready_file = sys.argv[1:5]
    app = make_app(record_file)
    {"eventlet": serve_eventlet, "wsgiref": serve_wsgiref}[kind](where, app, ready_file)


if __name__ == "__main__":
    main()
