#!/usr/bin/env python3
"""A stand-in for Entra ID and the Azure Monitor Logs Ingestion API, for tests.

Serves HTTPS on 127.0.0.1, checks each request against the documented shape
(client-credentials token request; gzip'd JSON array POSTed to
/dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01 with a
Bearer token), and logs what it accepted as JSON lines. The file named by
--mode-file says, at each request, whether to accept ("ok"), answer 503
("refuse"), hang past the client's time-out ("timeout"), never answer ("hang":
an hour), or answer 413 to a body over N bytes, compressed or not ("max:N", as
the real service does past 1 MB); "token-bytes:N" answers a valid token request
with a JSON token response of N bytes.
"""
import argparse, base64, gzip, hashlib, json, os, ssl, subprocess, tempfile, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

p = argparse.ArgumentParser()
p.add_argument("--cert", required=True)
p.add_argument("--key", required=True)
p.add_argument("--log", required=True)
p.add_argument("--port-file", required=True)
p.add_argument("--mode-file", required=True)
p.add_argument("--tenant", required=True)
p.add_argument("--client-id", required=True)
p.add_argument("--client-secret", required=True)
p.add_argument("--client-cert", help="PEM certificate whose key may sign client assertions")
p.add_argument("--dcr", required=True)
p.add_argument("--stream", required=True)
args = p.parse_args()

state = {"tokens": 0}


def mode():
    try:
        with open(args.mode_file) as f:
            return f.read().strip() or "ok"
    except FileNotFoundError:
        return "ok"
lock = threading.Lock()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def assertion_problem(jwt, token_url):
    """Why a client assertion (RS256 JWT, x5t of the registered cert) is invalid, or None."""
    if not args.client_cert:
        return "no certificate registered"
    try:
        h64, c64, s64 = jwt.split(".")
        header, claims = json.loads(b64url_decode(h64)), json.loads(b64url_decode(c64))
    except Exception as e:  # noqa: BLE001
        return f"malformed JWT: {e}"
    der = subprocess.run(["openssl", "x509", "-in", args.client_cert, "-outform", "DER"],
                         capture_output=True, check=True).stdout
    thumb = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
    if header.get("alg") != "RS256" or header.get("x5t") != thumb:
        return f"header {header}"
    now = time.time()
    if claims.get("aud") != token_url or claims.get("iss") != args.client_id \
            or claims.get("sub") != args.client_id or not claims.get("jti") \
            or not claims.get("nbf", now + 1) <= now + 5 < claims.get("exp", 0) + 5:
        return f"claims {claims}"
    with tempfile.TemporaryDirectory() as d:
        pub = subprocess.run(["openssl", "x509", "-in", args.client_cert, "-pubkey", "-noout"],
                             capture_output=True, check=True).stdout
        open(os.path.join(d, "pub.pem"), "wb").write(pub)
        open(os.path.join(d, "sig"), "wb").write(b64url_decode(s64))
        ok = subprocess.run(["openssl", "dgst", "-sha256", "-verify", os.path.join(d, "pub.pem"),
                             "-signature", os.path.join(d, "sig")],
                            input=f"{h64}.{c64}".encode(), capture_output=True)
    return None if ok.returncode == 0 else "bad signature"


def log(entry):
    with lock, open(args.log, "a") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, body=b"", ctype="application/json", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def huge_token(self, n):
        """A token response of n bytes (JSON, the token padding it out)."""
        head, tail = b'{"token_type": "Bearer", "expires_in": 3599, "access_token": "', b'"}'
        log({"kind": "huge-token", "bytes": n})
        body = head + b"x" * max(0, n - len(head) - len(tail)) + tail
        try:
            self.reply(200, body)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the client stopped reading at its limit, as it should
        self.close_connection = True

    def problem(self, code, why):
        log({"kind": "bad-request", "path": self.path, "why": why})
        self.reply(code, json.dumps({"error": why}).encode())

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        url = urlsplit(self.path)
        if url.path == f"/{args.tenant}/oauth2/v2.0/token":
            if self.headers.get("Content-Type") != "application/x-www-form-urlencoded":
                return self.problem(400, "token request is not form-encoded")
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            expected = {
                "grant_type": "client_credentials",
                "client_id": args.client_id,
                "scope": "https://monitor.azure.com//.default",
            }
            jwt = form.pop("client_assertion", None)
            if jwt is not None:
                expected["client_assertion_type"] = \
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                token_url = f"https://127.0.0.1:{self.server.server_address[1]}{url.path}"
                why = assertion_problem(jwt, token_url)
                if why:
                    return self.problem(401, f"client assertion: {why}")
            else:
                expected["client_secret"] = args.client_secret
            if form != expected:
                return self.problem(401, f"bad token request {sorted(form)}")
            with lock:
                state["tokens"] += 1
                token = f"token-{state['tokens']}"
            m = mode()
            if m.startswith("token-bytes:"):
                return self.huge_token(int(m[len("token-bytes:"):]))
            log({"kind": "token", "client_id": form["client_id"],
                 "credential": "certificate" if jwt else "secret"})
            return self.reply(200, json.dumps(
                {"token_type": "Bearer", "expires_in": 3599, "access_token": token}).encode())
        want = f"/dataCollectionRules/{args.dcr}/streams/{args.stream}"
        if url.path != want or parse_qs(url.query) != {"api-version": ["2023-01-01"]}:
            return self.problem(404, f"unexpected path {self.path}")
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer token-"):
            return self.problem(401, "no bearer token")
        if self.headers.get("Content-Type") != "application/json":
            return self.problem(400, "content type")
        if self.headers.get("Content-Encoding") != "gzip":
            return self.problem(400, "not gzip")
        m = mode()
        if m == "hang":
            log({"kind": "hung"})
            time.sleep(3600)
            return
        if m == "timeout":
            time.sleep(8)
            return self.reply(503, b"{}")
        if m == "refuse":
            log({"kind": "refused"})
            return self.reply(503, b'{"error":"ServiceUnavailable"}', extra=[("Retry-After", "1")])
        try:
            raw = gzip.decompress(body)
            records = json.loads(raw)
        except Exception as e:  # noqa: BLE001 - any malformed body is the client's fault
            return self.problem(400, f"body: {e}")
        if m.startswith("max:") and max(len(raw), len(body)) > int(m[4:]):
            log({"kind": "too-large", "bytes": len(raw), "count": len(records)})
            return self.reply(413, b'{"error":"RequestEntityTooLarge"}')
        if not isinstance(records, list) or not all("TimeGenerated" in r for r in records):
            return self.problem(400, "body is not an array of records with TimeGenerated")
        log({"kind": "ingest", "count": len(records), "bytes": len(raw), "gzip_bytes": len(body),
             "records": records})
        self.reply(204)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(args.cert, args.key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(args.port_file + ".tmp", args.port_file)
server.serve_forever()
