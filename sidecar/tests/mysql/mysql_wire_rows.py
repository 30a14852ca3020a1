# A binary-protocol client on raw wire bytes, for rows over one 16 MiB
# packet (mysql-connector-python's pure client misreads them, direct to
# MariaDB too). Connects as any user with no password (the sidecar's
# loopback handshake), prepares and executes each statement given on
# stdin (one a line) with COM_STMT_PREPARE / COM_STMT_EXECUTE, joins the
# packets of each row as the protocol continues them, and prints, per
# statement, one JSON line: {"sql", "rows": [[value or null, ...]]} with
# each value as {"len": N, "head": first 16 chars, "same": whether every
# char equals the first}, or {"sql", "error": [code, message]}.
# Usage: python3 mysql_wire_rows.py PORT DATABASE < statements
import json, socket, struct, sys

port, database = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=60)

def recv(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("the server closed the connection")
        b += c
    return b

def read():
    """One logical packet: its payload, continued packets joined."""
    out = b""
    while True:
        h = recv(4)
        n = int.from_bytes(h[:3], "little")
        out += recv(n)
        if n < 0xFFFFFF:
            return out

def send(seq, payload):
    while True:
        n = min(len(payload), 0xFFFFFF)
        s.sendall(n.to_bytes(3, "little") + bytes([seq & 0xFF]) + payload[:n])
        payload, seq = payload[n:], seq + 1
        if n < 0xFFFFFF:
            return

def lenenc(b, p):
    f = b[p]
    if f < 0xFB:
        return f, p + 1
    if f == 0xFC:
        return int.from_bytes(b[p + 1:p + 3], "little"), p + 3
    if f == 0xFD:
        return int.from_bytes(b[p + 1:p + 4], "little"), p + 4
    return int.from_bytes(b[p + 1:p + 9], "little"), p + 9

def err(p):
    return [int.from_bytes(p[1:3], "little"), p[9:].decode("utf-8", "replace")]

def is_eof(p):
    return p[:1] == b"\xfe" and len(p) < 9

read()  # the greeting
caps = 0x1 | 0x4 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x80000
hello = struct.pack("<IIB", caps, 1 << 30, 45) + bytes(23) + b"app\0" + b"\0" + database.encode() + b"\0" + b"mysql_native_password\0"
send(1, hello)
seq = 3
while True:
    p = read()
    if p[:1] == b"\x00":
        break
    if p[:1] == b"\xff":
        sys.exit("refused: %r" % err(p))
    send(seq, b"")  # an auth switch or more data: no password
    seq += 2

def value(b, p, ctype):
    # String-like types are length-encoded; LONGLONG 8 bytes, LONG 4.
    if ctype == 0x08:
        return str(struct.unpack_from("<q", b, p)[0]), p + 8
    if ctype in (0x03, 0x09):
        return str(struct.unpack_from("<i", b, p)[0]), p + 4
    n, p = lenenc(b, p)
    return b[p:p + n].decode("utf-8", "replace"), p + n

def describe(v):
    if v is None:
        return None
    return {"len": len(v), "head": v[:16], "same": len(set(v)) <= 1}

for sql in sys.stdin.read().splitlines():
    if not sql.strip():
        continue
    send(0, b"\x16" + sql.encode())
    p = read()
    if p[:1] == b"\xff":
        print(json.dumps({"sql": sql, "error": err(p)}), flush=True)
        continue
    stmt, ncols, nparams = struct.unpack_from("<IHH", p, 1)
    for _ in range(nparams):
        read()
    if nparams:
        read()
    for _ in range(ncols):
        read()
    if ncols:
        read()
    send(0, b"\x17" + struct.pack("<IBI", stmt, 0, 1))
    p = read()
    if p[:1] == b"\xff":
        print(json.dumps({"sql": sql, "error": err(p)}), flush=True)
        continue
    n, _ = lenenc(p, 0)
    types = []
    for _ in range(n):
        c = read()
        q = 0
        for _ in range(6):  # catalog, schema, table, org_table, name, org_name
            k, q = lenenc(c, q)
            q += k
        _, q = lenenc(c, q)  # length of the fixed fields
        types.append(c[q + 6])
    read()  # EOF
    rows, error = [], None
    while True:
        p = read()
        if is_eof(p):
            break
        if p[:1] == b"\xff":
            error = err(p)
            break
        bitmap = p[1:1 + (n + 7 + 2) // 8]
        q, row = 1 + len(bitmap), []
        for i in range(n):
            if bitmap[(i + 2) // 8] & (1 << ((i + 2) % 8)):
                row.append(None)
                continue
            v, q = value(p, q, types[i])
            row.append(describe(v))
        rows.append(row)
    out = {"sql": sql, "rows": rows}
    if error:
        out["error"] = error
    print(json.dumps(out), flush=True)
    send(0, b"\x19" + struct.pack("<I", stmt))
