#!/usr/bin/env python3
"""Drive an IMAP server with Python's stock imaplib, as a real client would.

    imaplib_session.py roundtrip PORT USER PASSWORD
        LOGIN, SELECT INBOX, APPEND a message full of awkward bytes (8-bit, long lines,
        text that looks like IMAP protocol), FETCH it back with BODY.PEEK[] and check it is
        byte-identical, LOGOUT. Prints "roundtrip ok uid=N size=M".

    imaplib_session.py badlogin PORT USER PASSWORD
        LOGIN must fail with a tagged NO [AUTHENTICATIONFAILED] (not BAD, not a dropped
        connection); then LOGOUT cleanly. Prints "badlogin ok: <response text>".

Exits non-zero with a message on any deviation. stdlib only.
"""

import imaplib
import re
import sys
import time

TIMEOUT = 30


def awkward_message() -> bytes:
    """A message whose body exercises literal relaying: every byte 0x01-0xFF except CR/LF,
    invalid UTF-8, a 10 000-octet line, and lines that look like IMAP responses/literals."""
    stamp = f"{time.time_ns()}"
    mid = f"<roundtrip-{stamp}@imapgate.test>"
    all_bytes = bytes(b for b in range(1, 256) if b not in (0x0A, 0x0D))
    lines = [
        b"From: Round Trip <roundtrip@imapgate.test>",
        b"To: alice@imapgate.test",
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= roundtrip " + stamp.encode(),
        b"Date: Tue, 14 Nov 2023 22:13:20 +0000",
        b"Message-ID: " + mid.encode(),
        b"MIME-Version: 1.0",
        b"Content-Type: application/octet-stream",
        b"Content-Transfer-Encoding: 8bit",
        b"",
        b"Every octet but NUL, CR and LF:",
        all_bytes,
        "UTF-8: Grüße, 日本語, emoji 📬".encode("utf-8"),
        "Latin-1: caf\xe9 na\xefve".encode("latin-1"),
        b"A001 OK this line is message content, not a response",
        b"* 1 EXISTS",
        b"{5}",
        b")",
        b"x" * 10_000,
        b"." ,
        b"",
    ]
    return b"\r\n".join(lines)


def roundtrip(port: int, user: str, password: str) -> None:
    msg = awkward_message()
    c = imaplib.IMAP4("127.0.0.1", port, timeout=TIMEOUT)
    typ, data = c.login(user, password)
    assert typ == "OK", (typ, data)
    typ, data = c.select("INBOX")
    assert typ == "OK", (typ, data)
    typ, data = c.append("INBOX", None, None, msg)
    assert typ == "OK", (typ, data)
    m = re.search(rb"\[APPENDUID \d+ (\d+)\]", data[0] or b"")
    if m:
        uid = m.group(1).decode()
    else:
        # Server without UIDPLUS: find it by Message-ID.
        mid = re.search(rb"Message-ID: (<[^>]+>)", msg).group(1).decode()
        c.noop()
        typ, data = c.uid("SEARCH", None, "HEADER", "Message-ID", mid)
        assert typ == "OK" and data[0], (typ, data)
        uid = data[0].split()[-1].decode()
    typ, data = c.uid("FETCH", uid, "(BODY.PEEK[] RFC822.SIZE)")
    assert typ == "OK", (typ, data)
    parts = [d for d in data if isinstance(d, tuple)]
    assert len(parts) == 1, f"expected one literal in FETCH response, got {data!r}"
    got = parts[0][1]
    if got != msg:
        at = next((i for i, (a, b) in enumerate(zip(got, msg)) if a != b), min(len(got), len(msg)))
        sys.exit(
            f"FETCH BODY.PEEK[] differs from APPENDed message: sent {len(msg)} octets, "
            f"got {len(got)}; first difference at octet {at}: "
            f"sent {msg[max(at - 20, 0):at + 20]!r}, got {got[max(at - 20, 0):at + 20]!r}"
        )
    size = re.search(rb"RFC822\.SIZE (\d+)", parts[0][0] + b" ".join(
        d for d in data if isinstance(d, bytes)))
    assert size and int(size.group(1)) == len(msg), (size, len(msg))
    typ, data = c.logout()
    assert typ == "BYE", (typ, data)
    print(f"roundtrip ok uid={uid} size={len(msg)}")


def badlogin(port: int, user: str, password: str) -> None:
    c = imaplib.IMAP4("127.0.0.1", port, timeout=TIMEOUT)
    try:
        typ, data = c.login(user, password)
    except imaplib.IMAP4.abort as e:
        sys.exit(f"connection dropped instead of NO: {e}")
    except imaplib.IMAP4.error as e:
        text = str(e)
        # imaplib raises with the bare response text for NO, "... command error: BAD ..."
        # for BAD.
        if "command error" in text:
            sys.exit(f"LOGIN got BAD, expected NO [AUTHENTICATIONFAILED]: {text}")
        if "[AUTHENTICATIONFAILED]" not in text:
            sys.exit(f"LOGIN refused without [AUTHENTICATIONFAILED]: {text}")
    else:
        sys.exit(f"LOGIN with a wrong password succeeded: {typ} {data}")
    typ, data = c.logout()
    assert typ == "BYE", (typ, data)
    print(f"badlogin ok: {text}")


def main() -> None:
    if len(sys.argv) != 5 or sys.argv[1] not in ("roundtrip", "badlogin"):
        sys.exit(__doc__)
    mode, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    {"roundtrip": roundtrip, "badlogin": badlogin}[mode](port, user, password)


if __name__ == "__main__":
    main()
