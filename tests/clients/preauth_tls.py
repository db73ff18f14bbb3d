#!/usr/bin/env python3
"""Connect with Python's stock ssl + imaplib over implicit TLS, optionally presenting a client
certificate, from a chosen loopback source address, and report how the server greeted.

    preauth_tls.py PORT CAFILE HOST SOURCE [CERTFILE KEYFILE]

Connects from SOURCE (a 127.0.0.x address) to 127.0.0.1:PORT, verifies the server against
CAFILE for HOST (sent as SNI), and presents CERTFILE/KEYFILE when given. Prints

    greeting <the server's first line>
    state <imaplib's state after the greeting: AUTH for PREAUTH, NONAUTH for OK>

and, when pre-authenticated, SELECTs INBOX and prints

    exists N
    message-id <ID>        (one line per message)

then LOGOUT. Exits non-zero with a message on any error. stdlib only.
"""

import imaplib
import re
import socket
import ssl
import sys

TIMEOUT = 30


def main() -> int:
    if len(sys.argv) not in (5, 7):
        print(__doc__, file=sys.stderr)
        return 64
    port, cafile, host, source = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    ctx = ssl.create_default_context(cafile=cafile)
    if len(sys.argv) == 7:
        ctx.load_cert_chain(sys.argv[5], sys.argv[6])

    class Client(imaplib.IMAP4_SSL):
        def _create_socket(self, timeout):
            sock = socket.create_connection(("127.0.0.1", port), timeout, source_address=(source, 0))
            return self.ssl_context.wrap_socket(sock, server_hostname=host)

    imap = Client(host, port, ssl_context=ctx, timeout=TIMEOUT)
    print("greeting", imap.welcome.decode("utf-8", "replace"), flush=True)
    print("state", imap.state, flush=True)
    if imap.state == "AUTH":
        typ, data = imap.select("INBOX", readonly=True)
        if typ != "OK":
            raise SystemExit(f"SELECT failed: {typ} {data}")
        print("exists", int(data[0]), flush=True)
        typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        if typ != "OK":
            raise SystemExit(f"FETCH failed: {typ} {data}")
        for part in data:
            if isinstance(part, tuple):
                m = re.search(rb"<([^>]+)>", part[1])
                if m:
                    print("message-id", m.group(1).decode(), flush=True)
    imap.logout()
    return 0


if __name__ == "__main__":
    sys.exit(main())
