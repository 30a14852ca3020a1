# A minimal MySQL 8 server for the MySQL plane's tests: no MySQL 8 server can
# be had from Debian's packages, so this speaks just enough of the protocol to
# check the sidecar's caching_sha2_password fast path (the scramble is
# verified as MySQL does) and answer the sidecar's setup and one query.
# Usage: python3 mysql_caching_sha2.py PASSWORD; prints its port, then one
# line per authentication ("auth ok USER" / "auth failed USER").
import hashlib, os, socket, struct, sys, threading

PASSWORD = sys.argv[1].encode()
TRACKED = b"sql_mode,character_set_client,character_set_connection,character_set_results,session_track_system_variables"

def packet(seq, payload):
    return struct.pack('<I', len(payload))[:3] + bytes([seq]) + payload

def read(sock):
    head = b''
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            raise EOFError
        head += chunk
    n = int.from_bytes(head[:3], 'little')
    body = b''
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            raise EOFError
        body += chunk
    return head[3], body

def lenenc(b):
    assert len(b) < 251
    return bytes([len(b)]) + b

def column(name):
    return (lenenc(b'def') + lenenc(b'') + lenenc(b'') + lenenc(b'') + lenenc(name) + lenenc(b'')
            + b'\x0c' + struct.pack('<HIBHB', 45, 1024, 0xfd, 0, 0) + b'\x00\x00')

def result(seq, names, row):
    out = packet(seq, bytes([len(names)]))
    for n in names:
        seq += 1
        out += packet(seq, column(n))
    seq += 1
    out += packet(seq, b''.join(lenenc(v) for v in row))
    seq += 1
    return out + packet(seq, b'\xfe\x00\x00\x02\x00\x00\x00')

OK = b'\x00\x00\x00\x02\x00\x00\x00'

def serve(conn):
    nonce = bytes(os.urandom(1)[0] % 90 + 33 for _ in range(20))
    caps = (0x1 | 0x4 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x10000 | 0x20000 | 0x80000 | 0x200000 | 0x800000 | 0x1000000)
    greeting = (b'\x0a' + b'8.0.36-sluice-test\x00' + struct.pack('<I', 7) + nonce[:8] + b'\x00'
                + struct.pack('<H', caps & 0xffff) + bytes([45]) + struct.pack('<H', 2)
                + struct.pack('<H', caps >> 16) + bytes([21]) + b'\x00' * 10 + nonce[8:] + b'\x00'
                + b'caching_sha2_password\x00')
    conn.sendall(packet(0, greeting))
    seq, body = read(conn)
    client_caps = struct.unpack('<I', body[:4])[0]
    pos = 32
    end = body.index(b'\x00', pos)
    user = body[pos:end].decode()
    pos = end + 1
    if client_caps & 0x200000:
        n = body[pos]; pos += 1
    else:
        n = body[pos]; pos += 1
    response = body[pos:pos + n]
    stage1 = hashlib.sha256(PASSWORD).digest()
    stage2 = hashlib.sha256(stage1).digest()
    digest = hashlib.sha256(stage2 + nonce).digest()
    expected = bytes(a ^ b for a, b in zip(stage1, digest))
    if response != expected:
        print('auth failed', user, flush=True)
        conn.sendall(packet(seq + 1, b'\xff' + struct.pack('<H', 1045) + b'#28000Access denied'))
        return
    print('auth ok', user, flush=True)
    conn.sendall(packet(seq + 1, b'\x01\x03') + packet(seq + 2, OK))
    while True:
        seq, body = read(conn)
        if body[:1] == b'\x01':
            return
        text = body[1:]
        if text.startswith(b'SET'):
            conn.sendall(packet(1, OK))
        elif text.startswith(b'SELECT CAST(@@SESSION.sql_mode'):
            # The settings, the current database and lower_case_table_names.
            conn.sendall(result(1, [b'a', b'b', b'c', b'd', b'e', b'f', b'g'],
                                [b'STRICT_TRANS_TABLES', b'utf8mb4', b'utf8mb4', b'utf8mb4', TRACKED, b'app', b'0']))
        elif text == b"SELECT 'hello'":
            conn.sendall(result(1, [b'hello'], [b'hello']))
        else:
            conn.sendall(packet(1, b'\xff' + struct.pack('<H', 1064) + b'#42000not in this test server'))

srv = socket.socket()
srv.bind(('127.0.0.1', 0))
srv.listen(8)
print(srv.getsockname()[1], flush=True)
while True:
    c, _ = srv.accept()
    def run(c=c):
        try:
            serve(c)
        except EOFError:
            pass
        finally:
            c.close()
    threading.Thread(target=run, daemon=True).start()
