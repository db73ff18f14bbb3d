#!/usr/bin/env python3
"""Drive an IMAP server over TLS with Python's stock ssl + imaplib, as a real client would.

    imaplib_tls.py implicit PORT CAFILE HOST USER PASSWORD
        IMAP4_SSL to 127.0.0.1:PORT, verifying the certificate against CAFILE for HOST (sent
        as SNI); LOGIN, SELECT INBOX, APPEND, FETCH it back byte-identical, LOGOUT.

    imaplib_tls.py starttls PORT CAFILE HOST USER PASSWORD
        IMAP4 in plaintext: the capabilities must offer STARTTLS and show LOGINDISABLED, and
        LOGIN must fail with NO [PRIVACYREQUIRED]; then imaplib.starttls(): the fresh
        capabilities must have neither STARTTLS nor LOGINDISABLED; then the same round trip
        as `implicit`.

Prints "VERSION CIPHER" and "roundtrip ok uid=N" lines; exits non-zero with a message on any
deviation. stdlib only.
"""

import imaplib
import re
import socket
import ssl
import sys
import time

TIMEOUT = 30


class Connect:
    """Connect to 127.0.0.1 whatever HOST resolves to; HOST is only the TLS name."""

    def _create_socket(self, timeout):
        return socket.create_connection(("127.0.0.1", self.port), timeout)


class IMAP4(Connect, imaplib.IMAP4):
    pass


class IMAP4_SSL(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def context(cafile: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def roundtrip(c, user: str, password: str) -> None:
    typ, data = c.login(user, password)
    if typ != "OK":
        fail(f"LOGIN: {typ} {data}")
    typ, data = c.select("INBOX")
    if typ != "OK":
        fail(f"SELECT: {typ} {data}")
    stamp = time.time_ns()
    msg = (
        f"From: tls@imapgate.test\r\nTo: {user}@imapgate.test\r\n"
        f"Subject: over TLS {stamp}\r\nMessage-ID: <tls-{stamp}@imapgate.test>\r\n\r\n"
        "Sent through imapgate over TLS.\r\n" + "x" * 20000 + "\r\n"
    ).encode()
    typ, data = c.append("INBOX", None, None, msg)
    if typ != "OK":
        fail(f"APPEND: {typ} {data}")
    m = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
    if m:
        uid = m.group(1).decode()
    else:
        typ, data = c.uid("SEARCH", None, "HEADER", "Message-ID", f"<tls-{stamp}@imapgate.test>")
        uid = data[0].split()[-1].decode()
    typ, data = c.uid("FETCH", uid, "(BODY.PEEK[])")
    if typ != "OK":
        fail(f"FETCH: {typ} {data}")
    body = next(part[1] for part in data if isinstance(part, tuple))
    if body != msg:
        fail(f"FETCH returned {len(body)} bytes that differ from the {len(msg)} appended")
    typ, data = c.logout()
    if typ != "BYE":
        fail(f"LOGOUT: {typ} {data}")
    print(f"roundtrip ok uid={uid}")


def describe(sock) -> None:
    print(f"{sock.version()} {sock.cipher()[0]}")


def implicit(port: int, cafile: str, host: str, user: str, password: str) -> None:
    c = IMAP4_SSL(host, port, ssl_context=context(cafile), timeout=TIMEOUT)
    describe(c.sock)
    roundtrip(c, user, password)


def starttls(port: int, cafile: str, host: str, user: str, password: str) -> None:
    c = IMAP4(host, port, timeout=TIMEOUT)
    caps = set(c.capabilities)
    print("before:", " ".join(sorted(caps)))
    if "STARTTLS" not in caps or "LOGINDISABLED" not in caps:
        fail(f"plaintext capabilities {sorted(caps)}: want STARTTLS and LOGINDISABLED")
    if any(cap.startswith("AUTH=") for cap in caps):
        fail(f"AUTH= offered in plaintext: {sorted(caps)}")
    try:
        c.login(user, password)
        fail("LOGIN in plaintext succeeded")
    except imaplib.IMAP4.error as e:
        if "PRIVACYREQUIRED" not in str(e):
            fail(f"LOGIN in plaintext: {e}, want NO [PRIVACYREQUIRED]")
        print("plaintext login refused:", e)
    c.starttls(ssl_context=context(cafile))
    describe(c.sock)
    caps = set(c.capabilities)
    print("after:", " ".join(sorted(caps)))
    if "STARTTLS" in caps or "LOGINDISABLED" in caps:
        fail(f"capabilities after STARTTLS {sorted(caps)}")
    roundtrip(c, user, password)


def main() -> None:
    if len(sys.argv) != 7 or sys.argv[1] not in ("implicit", "starttls"):
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    mode, port, cafile, host, user, password = sys.argv[1:]
    {"implicit": implicit, "starttls": starttls}[mode](int(port), cafile, host, user, password)


if __name__ == "__main__":
    main()
