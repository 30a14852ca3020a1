#!/usr/bin/env python3
"""Hostile PostgreSQL clients against a running sidecar (see hostile.sh).

Each case opens raw wire sessions (no driver: the point is bytes a driver
would never send), misbehaves in one way, and reports what it got back and
the sidecar's VmRSS / VmHWM afterwards. A well-behaved session runs beside
each case and must be answered. Usage: hostile.py HOST PORT SIDECAR_PID
"""
import socket
import struct
import sys
import time

HOST, PORT, PID = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def mem():
    fields = {}
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                fields[k] = int(v.split()[0]) / 1024
    return fields


def msg(tag, body):
    return tag + struct.pack("!I", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


def connect():
    s = socket.create_connection((HOST, PORT))
    params = cstr("user") + cstr("app") + cstr("database") + cstr("postgres") + b"\0"
    body = struct.pack("!I", 196608) + params
    s.sendall(struct.pack("!I", len(body) + 4) + body)
    _, err = read_until_ready(s)
    if err:
        s.close()
        raise ConnectionError(err)
    return s


def read_msgs(s, stop_tag=b"Z", limit=None):
    """Reads messages until one with stop_tag; returns (tags, first error text)."""
    buf = b""
    tags, error = [], None
    while True:
        while len(buf) < 5:
            chunk = s.recv(1 << 16)
            if not chunk:
                return tags, error or "connection closed"
            buf += chunk
        tag, n = buf[:1], struct.unpack("!I", buf[1:5])[0]
        while len(buf) < 1 + n:
            chunk = s.recv(1 << 20)
            if not chunk:
                return tags, error or "connection closed"
            buf += chunk
        body, buf = buf[5 : 1 + n], buf[1 + n :]
        tags.append(tag)
        if tag == b"E" and error is None:
            fields = dict((f[:1], f[1:].decode(errors="replace")) for f in body.split(b"\0") if f)
            error = f"{fields.get(b'C')} {fields.get(b'M', '')[:90]}"
        if tag == stop_tag or (limit and len(tags) >= limit):
            return tags, error


def read_until_ready(s):
    return read_msgs(s, b"Z")


def query(s, sql):
    s.sendall(msg(b"Q", cstr(sql)))
    return read_until_ready(s)


def well_behaved():
    s = connect()
    tags, err = query(s, "select 1")
    s.close()
    return "answered" if b"D" in tags and err is None else f"NOT answered ({err})"


def report(name, got, before):
    after = mem()
    print(f"{name:44} {got[:70]:70} RSS {after['VmRSS']:7.1f} MiB (+{after['VmRSS'] - before['VmRSS']:6.1f})  peak {after['VmHWM']:7.1f} MiB  beside it: {well_behaved()}")
    sys.stdout.flush()


def case_huge_select_list():
    s = connect()
    _, err = query(s, "select " + ",".join(["1"] * 1_000_000))  # ~2 MB, a million tokens
    s.close()
    return f"refused: {err}" if err else "ran"


def case_describes_without_sync():
    s = connect()
    s.sendall(msg(b"P", cstr("") + cstr("select 1") + struct.pack("!H", 0)))
    describe = msg(b"D", b"S" + cstr(""))
    sent = 0
    s.settimeout(2)
    try:
        while sent < 32 << 20:
            s.sendall(describe * 4096)
            sent += len(describe) * 4096
    except (socket.timeout, OSError):
        pass
    s.settimeout(10)
    try:
        s.sendall(msg(b"S", b""))
        tags, err = read_msgs(s, b"Z")
    except (socket.timeout, OSError) as e:
        tags, err = [], f"closed ({e.__class__.__name__})"
    s.close()
    return f"{sent >> 20} MiB of Describe sent; {err or 'no error'}"


def case_unread_refusals():
    s = connect()
    s.settimeout(2)
    denied = msg(b"Q", cstr("drop table big"))
    sent = 0
    try:
        while sent < 600_000:
            s.sendall(denied * 1000)
            sent += 1000
    except (socket.timeout, OSError):
        pass
    s.close()
    return f"{sent} denied statements written, none read (reading stopped at ~{sent})"


def case_one_huge_message():
    s = connect()
    s.settimeout(10)
    try:
        s.sendall(msg(b"Q", cstr("select '" + "x" * (200 << 20) + "'")))
        _, err = read_until_ready(s)
    except (socket.timeout, OSError) as e:
        err = f"closed while sending ({e.__class__.__name__})"
    s.close()
    return f"200 MiB Query: {err}"


def case_slow_reader():
    s = connect()
    s.settimeout(30)
    s.sendall(msg(b"Q", cstr("select id, pad, secret from big")))
    got = 0
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            break
        if not chunk:
            break
        got += len(chunk)
        time.sleep(0.01)
    before_close = mem()["VmRSS"]
    s.close()
    return f"read {got >> 10} KiB of a 1M-row result in 20 s (RSS while reading {before_close:.1f} MiB)"


def case_many_idle():
    conns, refused = [], {}
    for _ in range(200):
        try:
            conns.append(connect())
        except ConnectionError as e:
            refused[str(e)[:40]] = refused.get(str(e)[:40], 0) + 1
    peak = mem()["VmRSS"]
    for c in conns:
        c.close()
    return f"{len(conns)} idle sessions held, refused {refused} (RSS while held {peak:.1f} MiB)"


def case_sends_nothing():
    conns = []
    for _ in range(200):
        c = socket.create_connection((HOST, PORT))
        conns.append(c)
    peak = mem()["VmRSS"]
    for c in conns:
        c.close()
    return f"200 connections that never send a startup (RSS {peak:.1f} MiB)"


CASES = [
    ("baseline (one session, select 1)", lambda: well_behaved()),
    ("2 MB select list (1M tokens)", case_huge_select_list),
    ("32 MiB of Describe without Sync", case_describes_without_sync),
    ("600k denied statements, answers unread", case_unread_refusals),
    ("one 200 MiB Query message", case_one_huge_message),
    ("slow reader of 1M masked rows", case_slow_reader),
    ("200 idle sessions", case_many_idle),
    ("200 connections sending nothing", case_sends_nothing),
]

if __name__ == "__main__":
    print(f"sidecar pid {PID}; start: {mem()}")
    for name, case in CASES:
        before = mem()
        try:
            got = case()
        except Exception as e:  # a case that breaks is reported, not hidden
            got = f"client error: {e!r}"
        report(name, got, before)
