#!/usr/bin/env python3
"""A stand-in for Entra ID and the Azure Monitor Logs Ingestion API, for tests.

Serves HTTPS on 127.0.0.1, checks each request against the documented shape
(client-credentials token request; gzip'd JSON array POSTed to
/dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01 with a
Bearer token), and logs what it accepted as JSON lines. The file named by
--mode-file says, at each request, whether to accept ("ok"), answer 503
("refuse"), or hang past the client's time-out ("timeout").
"""
import argparse, gzip, json, ssl, threading, time
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
                "client_secret": args.client_secret,
                "scope": "https://monitor.azure.com//.default",
            }
            if form != expected:
                return self.problem(401, f"bad token request {sorted(form)}")
            with lock:
                state["tokens"] += 1
                token = f"token-{state['tokens']}"
            log({"kind": "token", "client_id": form["client_id"]})
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
        if m == "timeout":
            time.sleep(8)
            return self.reply(503, b"{}")
        if m == "refuse":
            log({"kind": "refused"})
            return self.reply(503, b'{"error":"ServiceUnavailable"}', extra=[("Retry-After", "1")])
        try:
            records = json.loads(gzip.decompress(body))
        except Exception as e:  # noqa: BLE001 - any malformed body is the client's fault
            return self.problem(400, f"body: {e}")
        if not isinstance(records, list) or not all("TimeGenerated" in r for r in records):
            return self.problem(400, "body is not an array of records with TimeGenerated")
        log({"kind": "ingest", "count": len(records), "records": records})
        self.reply(204)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(args.cert, args.key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os  # noqa: E402
os.rename(args.port_file + ".tmp", args.port_file)
server.serve_forever()
