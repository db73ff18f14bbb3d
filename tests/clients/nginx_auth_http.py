#!/usr/bin/env python3
"""A stand-in for an nginx mail `auth_http` service, for tests/auth.rs.

It speaks the protocol as nginx documents it (shared/rfc/nginx-mail-auth-http.xml):
credentials arrive percent-encoded in Auth-User / Auth-Pass, the answer is in
headers only.  HTTP/1.1 with keep-alive (every response has a Content-Length).

    nginx_auth_http.py --port-file FILE --log FILE --backend-port N --users JSON
                       [--tls-cert PEM --tls-key PEM]

With --tls-cert/--tls-key it serves https (Python's stock ssl).

--users is a JSON object {"login name": {"password": ..., "backend_user": ...,
"backend_pass": ...}}.  Besides those, special login names:

    slow      never answers in time (sleeps 10 s)
    error     HTTP 500
    nowait    wrong password without Auth-Wait (nginx then closes the session)

A wrong password is answered "Invalid login or password" with Auth-Wait: 2.
Each request is appended to --log as one JSON line with the decoded headers
(this file is the service's, it is never the gateway's log).
"""

import argparse
import http.server
import json
import os
import threading
import time
import urllib.parse

LOCK = threading.Lock()


def decode(value):
    """nginx percent-encodes; the bytes are UTF-8 (http.server hands us latin-1)."""
    return urllib.parse.unquote_to_bytes(value.encode("latin-1")).decode("utf-8")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--backend-port", type=int, required=True)
    ap.add_argument("--users", required=True)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args()
    users = json.loads(args.users)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def answer(self, status, headers):
            body = b"ignored body\n"
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            h = self.headers
            user = decode(h.get("Auth-User", ""))
            password = decode(h.get("Auth-Pass", ""))
            record = {
                "path": self.path,
                "request_version": self.request_version,
                "user": user,
                "password": password,
                "raw_user": h.get("Auth-User"),
                "raw_pass": h.get("Auth-Pass"),
                "header_names": list(h.keys()),
            }
            for k in ("Host", "Auth-Method", "Auth-Protocol", "Auth-Login-Attempt",
                      "Client-IP", "Auth-SSL", "X-Auth-Key"):
                record[k] = h.get(k)
            with LOCK, open(args.log, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if user == "slow":
                time.sleep(10)
                self.answer(200, [("Auth-Status", "OK")])
            elif user == "error":
                self.answer(500, [("Auth-Status", "OK")])
            elif user in users and users[user]["password"] == password:
                u = users[user]
                self.answer(200, [
                    ("Auth-Status", "OK"),
                    ("Auth-Server", "127.0.0.1"),
                    ("Auth-Port", str(args.backend_port)),
                    ("Auth-User", u["backend_user"]),
                    ("Auth-Pass", u["backend_pass"]),
                ])
            elif user == "nowait":
                self.answer(200, [("Auth-Status", "Invalid login or password")])
            else:
                self.answer(200, [("Auth-Status", "Invalid login or password"),
                                  ("Auth-Wait", "2")])

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if args.tls_cert:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    # Rename: the test never reads a half-written file.
    os.replace(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
