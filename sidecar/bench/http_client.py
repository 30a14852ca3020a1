#!/usr/bin/env python3
"""Sends exactly N keep-alive GETs over C connections (one in flight per
connection), HTTP/1.1 like wrk; exits non-zero on a non-200."""
import selectors, socket, sys
host, port, path, n, c = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
req = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
sel = selectors.DefaultSelector()
sent = done = 0
bad = 0
conns = []
for _ in range(min(c, n)):
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    st = {"s": s, "buf": b""}
    sel.register(s, selectors.EVENT_READ, st)
    s.sendall(req); sent += 1
def parse(buf):
    i = buf.find(b"\r\n\r\n")
    if i < 0: return None
    head = buf[:i].decode("latin1").lower()
    status = int(head.split(" ", 2)[1])
    if "transfer-encoding: chunked" in head:
        j = i + 4
        while True:
            k = buf.find(b"\r\n", j)
            if k < 0: return None
            size = int(buf[j:k].split(b";")[0], 16)
            if size == 0:
                end = buf.find(b"\r\n", k + 2)
                if end < 0: return None
                return status, end + 2
            j = k + 2 + size + 2
            if j > len(buf): return None
    cl = 0
    for line in head.split("\r\n"):
        if line.startswith("content-length:"): cl = int(line.split(":")[1])
    if len(buf) < i + 4 + cl: return None
    return status, i + 4 + cl
while done < n:
    for key, _ in sel.select():
        st = key.data
        data = st["s"].recv(65536)
        if not data: sys.exit("connection closed")
        st["buf"] += data
        while True:
            r = parse(st["buf"])
            if r is None: break
            status, used = r
            st["buf"] = st["buf"][used:]
            done += 1
            if status != 200: bad += 1
            if sent < n:
                st["s"].sendall(req); sent += 1
print(f"requests {done} errors {bad}")
sys.exit(1 if bad else 0)
