# A minimal MySQL 8 server for the MySQL plane's tests: no MySQL 8 server can
# be had from Debian's packages, so this speaks just enough of the protocol to
# check the sidecar's caching_sha2_password authentication (the scramble and
# the full authentication are verified as MySQL does) and answer the
# sidecar's setup and one query. Nothing beyond the standard library: the
# RSA key and OAEP are done here (a test key, generated at start).
#
# Usage: python3 mysql_caching_sha2.py PASSWORD [MODE [CERT KEY]]
# MODE:
#   fast     the scramble is checked (fast path; the default)
#   full     full authentication is asked for (as after a server restart, when
#            the cache is empty): the password in clear over TLS, else the
#            RSA public-key exchange
#   badkey   full authentication, and a malformed public key when asked for it
#   weakkey  full authentication, and a 1024-bit public key when asked for it
#   clear    full authentication, then a switch to mysql_clear_password
# With CERT and KEY (PEM files) the server offers TLS.
# Prints its port, then one line per authentication ("auth ok USER HOW" /
# "auth failed USER WHY"), and "cleartext password on plain TCP" whenever the
# password's bytes arrive in clear outside TLS.
import hashlib, os, secrets, socket, ssl, struct, sys, threading

PASSWORD = sys.argv[1].encode()
MODE = sys.argv[2] if len(sys.argv) > 2 else 'fast'
CERT = sys.argv[3:5] if len(sys.argv) > 4 else None
TRACKED = b"sql_mode,character_set_client,character_set_connection,character_set_results,session_track_system_variables"
CLIENT_SSL = 0x800


# === RSA (test key only) ===

def is_probable_prime(n):
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for _ in range(32):
        a = secrets.randbelow(n - 3) + 2
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True

def prime(bits):
    while True:
        p = secrets.randbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if is_probable_prime(p):
            return p

def rsa_key(bits):
    e = 65537
    while True:
        p, q = prime(bits // 2), prime(bits // 2)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e:
            return p * q, e, pow(e, -1, phi)

def der(tag, content):
    n = len(content)
    if n < 0x80:
        head = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, 'big')
        head = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + head + content

def der_int(v):
    b = v.to_bytes(v.bit_length() // 8 + 1, 'big')
    return der(0x02, b)

def public_pem(n, e):
    rsa = der(0x30, der_int(n) + der_int(e))
    algorithm = der(0x30, der(0x06, bytes.fromhex('2a864886f70d010101')) + b'\x05\x00')
    spki = der(0x30, algorithm + der(0x03, b'\x00' + rsa))
    import base64
    body = base64.b64encode(spki).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return ('-----BEGIN PUBLIC KEY-----\n' + '\n'.join(lines) + '\n-----END PUBLIC KEY-----\n').encode()

def mgf1(seed, length):
    out = b''
    for c in range((length + 19) // 20):
        out += hashlib.sha1(seed + c.to_bytes(4, 'big')).digest()
    return out[:length]

def oaep_decrypt(key, data):
    n, e, d = key
    k = (n.bit_length() + 7) // 8
    if len(data) != k:
        return None
    em = pow(int.from_bytes(data, 'big'), d, n).to_bytes(k, 'big')
    if em[0] != 0:
        return None
    masked_seed, masked_db = em[1:21], em[21:]
    seed = bytes(a ^ b for a, b in zip(masked_seed, mgf1(masked_db, 20)))
    db = bytes(a ^ b for a, b in zip(masked_db, mgf1(seed, k - 21)))
    if db[:20] != hashlib.sha1(b'').digest():
        return None
    rest = db[20:].lstrip(b'\x00')
    if rest[:1] != b'\x01':
        return None
    return rest[1:]

KEY = rsa_key(2048) if MODE == 'full' else rsa_key(1024) if MODE == 'weakkey' else None
BAD_KEY = b'-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n'


# === packets ===

def packet(seq, payload):
    return struct.pack('<I', len(payload))[:3] + bytes([seq & 0xff]) + payload

class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.tls = False

    def read(self):
        head = self.recv(4)
        body = self.recv(int.from_bytes(head[:3], 'little'))
        if not self.tls and PASSWORD in body:
            print('cleartext password on plain TCP', flush=True)
        return head[3], body

    def recv(self, n):
        out = b''
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return out

    def send(self, data):
        self.sock.sendall(data)

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

def denied(conn, seq, user, why):
    print('auth failed', user, why, flush=True)
    conn.send(packet(seq, b'\xff' + struct.pack('<H', 1045) + b'#28000Access denied'))


# === authentication ===

def full_authentication(conn, seq, user, nonce):
    """After the server's perform_full_authentication (sent with `seq`):
    whether the password arrived as MySQL 8 takes it."""
    seq, body = conn.read()
    if conn.tls:
        if body == PASSWORD + b'\x00':
            return seq, 'full-tls'
        denied(conn, seq + 1, user, 'wrong cleartext password over TLS')
        return seq, None
    if MODE == 'clear':
        conn.send(packet(seq + 1, b'\xfemysql_clear_password\x00'))
        seq, body = conn.read()
        denied(conn, seq + 1, user, 'mysql_clear_password answered')
        return seq, None
    if body != b'\x02':
        denied(conn, seq + 1, user, 'expected a public key request, got %r' % body[:8])
        return seq, None
    if MODE == 'badkey':
        conn.send(packet(seq + 1, b'\x01' + BAD_KEY))
    else:
        conn.send(packet(seq + 1, b'\x01' + public_pem(KEY[0], KEY[1])))
    seq, body = conn.read()
    if MODE == 'badkey':
        denied(conn, seq + 1, user, 'answered a malformed public key')
        return seq, None
    clear = oaep_decrypt(KEY, body)
    expected = bytes(b ^ nonce[i % len(nonce)] for i, b in enumerate(PASSWORD + b'\x00'))
    if clear != expected:
        denied(conn, seq + 1, user, 'RSA-encrypted password does not match')
        return seq, None
    return seq, 'full-rsa'

def serve(conn):
    nonce = bytes(os.urandom(1)[0] % 90 + 33 for _ in range(20))
    caps = (0x1 | 0x4 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x10000 | 0x20000 | 0x80000 | 0x200000 | 0x800000 | 0x1000000)
    if CERT:
        caps |= CLIENT_SSL
    greeting = (b'\x0a' + b'8.0.36-sluice-test\x00' + struct.pack('<I', 7) + nonce[:8] + b'\x00'
                + struct.pack('<H', caps & 0xffff) + bytes([45]) + struct.pack('<H', 2)
                + struct.pack('<H', caps >> 16) + bytes([21]) + b'\x00' * 10 + nonce[8:] + b'\x00'
                + b'caching_sha2_password\x00')
    conn.send(packet(0, greeting))
    seq, body = conn.read()
    client_caps = struct.unpack('<I', body[:4])[0]
    if CERT and client_caps & CLIENT_SSL and len(body) == 32:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(CERT[0], CERT[1])
        conn.sock = ctx.wrap_socket(conn.sock, server_side=True)
        conn.tls = True
        seq, body = conn.read()
        client_caps = struct.unpack('<I', body[:4])[0]
    pos = 32
    end = body.index(b'\x00', pos)
    user = body[pos:end].decode()
    pos = end + 1
    n = body[pos]; pos += 1
    response = body[pos:pos + n]
    if MODE == 'fast':
        stage1 = hashlib.sha256(PASSWORD).digest()
        stage2 = hashlib.sha256(stage1).digest()
        digest = hashlib.sha256(stage2 + nonce).digest()
        expected = bytes(a ^ b for a, b in zip(stage1, digest))
        if response != expected:
            denied(conn, seq + 1, user, 'scramble does not match')
            return
        how = 'fast'
        conn.send(packet(seq + 1, b'\x01\x03'))
        seq += 1
    else:
        conn.send(packet(seq + 1, b'\x01\x04'))
        seq, how = full_authentication(conn, seq + 1, user, nonce)
        if how is None:
            return
    print('auth ok', user, how, flush=True)
    conn.send(packet(seq + 1, OK))
    while True:
        seq, body = conn.read()
        if body[:1] == b'\x01':
            return
        text = body[1:]
        if text.startswith(b'SET'):
            conn.send(packet(1, OK))
        elif text.startswith(b'SELECT CAST(@@SESSION.sql_mode'):
            # The settings, the current database and lower_case_table_names.
            conn.send(result(1, [b'a', b'b', b'c', b'd', b'e', b'f', b'g'],
                             [b'STRICT_TRANS_TABLES', b'utf8mb4', b'utf8mb4', b'utf8mb4', TRACKED, b'app', b'0']))
        elif text == b"SELECT 'hello'":
            conn.send(result(1, [b'hello'], [b'hello']))
        else:
            conn.send(packet(1, b'\xff' + struct.pack('<H', 1064) + b'#42000not in this test server'))

srv = socket.socket()
srv.bind(('127.0.0.1', 0))
srv.listen(8)
print(srv.getsockname()[1], flush=True)
while True:
    c, _ = srv.accept()
    def run(c=c):
        try:
            serve(Conn(c))
        except (EOFError, ConnectionError, ssl.SSLError):
            pass
        finally:
            c.close()
    threading.Thread(target=run, daemon=True).start()
