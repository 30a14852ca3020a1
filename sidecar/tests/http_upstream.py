# The upstream of sidecar/tests/http/http_soundness.rs: a Python standard-library
# HTTP server that reads requests the way many Python APIs do (json.loads on
# the body bytes, the X-HTTP-Method-Override family honoured) and answers the
# same resource in the representations a client may ask for.
#
# Usage: python3 http_upstream.py PREFIX   (prints the port it listens on)
# Every request is logged; GET /__log (straight to this server, never through
# the sidecar) returns the log, so a test can prove a refusal never arrived.
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = sys.argv[1] if len(sys.argv) > 1 else ""
CARD = "4111111111111111"
EMAIL = "ann@example.com"
LOG = []
LOCK = threading.Lock()
OVERRIDES = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")


def customer():
    return {"id": 1, "customer": {"email": EMAIL, "name": "Ann"}, "card": CARD}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, ctype, body, headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        if self.path == "/__log":
            with LOCK:
                body = json.dumps(LOG)
            return self.send(200, "application/json", body)
        raw = self.read_body()
        method = self.command
        for h in OVERRIDES:
            if self.headers.get(h):
                method = self.headers.get(h)
        entry = {
            "method": self.command,
            "effectiveMethod": method,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": raw.decode("latin-1"),
        }
        try:
            parsed = json.loads(raw) if raw else None
            if isinstance(parsed, dict) and "amount" in parsed:
                entry["amount"] = repr(parsed["amount"])
        except Exception as e:  # noqa: BLE001 - the log says what Python made of it
            entry["parseError"] = str(e)
        with LOCK:
            LOG.append(entry)
        path = self.path.split("?", 1)[0]
        if not path.startswith(PREFIX):
            return self.send(404, "text/plain", "outside the prefix: " + path)
        route = path[len(PREFIX):] or "/"
        auth = self.headers.get("Authorization", "")
        key = self.headers.get("X-Api-Key", "")
        if route == "/v1/refunds":
            return self.send(200, "application/json", json.dumps({"refunded": entry.get("amount")}))
        if route == "/echo":
            return self.send(200, "application/json", json.dumps(entry))
        if route == "/echo-slash":
            # PHP's json_encode escapes '/' as '\/'.
            return self.send(200, "application/json", json.dumps(entry).replace("/", "\\/"))
        if route == "/echo-unicode":
            # Every character of the credential as a \u escape.
            esc = "".join("\\u%04x" % ord(c) for c in auth)
            return self.send(200, "application/json", '{"authorization": "%s"}' % esc)
        if route == "/echo-text":
            return self.send(200, "text/plain", "you sent Authorization: %s and key %s\n" % (auth, key))
        if route == "/echo-binary":
            return self.send(200, "application/octet-stream", b"\x00\x01" + auth.encode() + b"\xff")
        if route == "/echo-urlencoded":
            from urllib.parse import quote
            return self.send(200, "text/plain", "next=" + quote(auth, safe=""))
        if route == "/echo-header":
            return self.send(204, None, b"", [("X-Seen-Auth", auth), ("Set-Cookie", "k=" + key)])
        if route == "/echo-reason":
            # The credential in the status line's reason phrase.
            self.send_response(401, "bad credential " + auth)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if route == "/unauthorized":
            return self.send(401, "text/plain", "invalid credential %s for this account" % auth)
        if route == "/echo-gzip":
            return self.send(200, "text/plain", gzip.compress(auth.encode()), [("Content-Encoding", "gzip")])
        if route == "/echo-zip":
            import io
            import zipfile
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("request.txt", "Authorization: " + auth)
            return self.send(200, "application/zip", buf.getvalue())
        if route == "/echo-gzip-octets":
            # gzip under a label that does not say so.
            return self.send(200, "application/octet-stream", gzip.compress(auth.encode()))
        if route == "/echo-gzip-bytewise":
            # The same, a byte a chunk: the magic bytes never arrive together.
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for byte in gzip.compress(auth.encode()):
                self.wfile.write(b"1\r\n%s\r\n" % bytes([byte]))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        if route == "/echo-chunked":
            # The credential split over chunk boundaries, one byte a chunk.
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in ["token: "] + list(auth) + ["\n"]:
                b = piece.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        if route == "/customer":
            fmt = self.path.split("fmt=", 1)[1] if "fmt=" in self.path else "json"
            c = customer()
            if fmt == "json":
                return self.send(200, "application/json", json.dumps(c), [("X-Contact", "mailto:" + EMAIL), ("Location", "/cards/" + CARD)])
            if fmt == "xml":
                return self.send(200, "application/xml", "<customer><id>1</id><email>%s</email><card>%s</card></customer>" % (EMAIL, CARD))
            if fmt == "csv":
                return self.send(200, "text/csv", "id,email,card\n1,%s,%s\n" % (EMAIL, CARD))
            if fmt == "ndjson":
                return self.send(200, "application/x-ndjson", json.dumps(c) + "\n" + json.dumps(c) + "\n")
            if fmt == "sse":
                return self.send(200, "text/event-stream", "event: customer\ndata: %s\n\n" % json.dumps(c))
            if fmt == "bomtext":
                return self.send(200, "text/plain", b"\xef\xbb\xbf" + json.dumps(c).encode())
            if fmt == "bomjson":
                return self.send(200, "application/json", b"\xef\xbb\xbf" + json.dumps(c).encode())
            if fmt == "html":
                return self.send(200, "text/html", "<p>%s pays with %s</p>" % (EMAIL, CARD))
            if fmt == "utf16":
                return self.send(200, "application/json; charset=utf-16", json.dumps(c).encode("utf-16"))
            if fmt == "binary":
                return self.send(200, "application/octet-stream", b"\x00" + CARD.encode())
            if fmt == "none":
                return self.send(200, None, json.dumps(c))
            return self.send(400, "text/plain", "unknown fmt")
        return self.send(200, "application/json", json.dumps({"route": route, "method": method}))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
