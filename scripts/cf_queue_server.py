"""A local stand-in for a Cloudflare Queue with an HTTP pull consumer, for the tests of the
`cloudflare_queue` event source. Python's standard library only; binds 127.0.0.1.

    python3 cf_queue_server.py TOKEN     # prints "PORT" on stdout once listening

Implements the documented pull-consumer API of one account and any queue id:
- POST /client/v4/accounts/{account}/queues/{queue}/messages/pull
  {"batch_size": N, "visibility_timeout_ms": MS} -> {"success": true, "errors": [],
  "messages": [], "result": {"message_backlog_count": N, "messages": [{"id", "body",
  "timestamp_ms", "attempts", "lease_id", "metadata"}]}}: leases up to N visible
  messages for MS (default 30000); a lease that expires makes its message visible again.
- POST .../messages/ack {"acks": [{"lease_id"}], "retries": [{"lease_id", "delay_seconds"}]}
  -> {"success": true, "result": {"ackCount", "retryCount", "warnings"}}: an ack deletes
  the message, a retry makes it visible again after the delay; an expired or unknown
  lease is a warning, not an ack.
- POST .../messages/batch {"messages": [{"body": ..., "content_type": "json"|"text"}]}
  -> {"success": true, "errors": [], "messages": [], "result": {}}: enqueues every message
  (a json body as its JSON text, as R2 notifications arrive), all or none; more than 100
  messages is a 400.
All need "Authorization: Bearer TOKEN" (else 401 with Cloudflare's error shape).
Test hooks: POST /_test/send?queue=Q {"body": ...} enqueues one message (its body as
JSON text, as R2 notifications arrive; with &encoding=base64 that text base64-encoded, as
the pull API may hand a message over); GET /_test/stats?queue=Q gives {"visible",
"leased", "acked", "retried", "pulls", "sent"}.
"""

import base64
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LOCK = threading.Lock()
QUEUES = {}


def queue(name):
    return QUEUES.setdefault(name, {"messages": {}, "acked": 0, "retried": 0, "pulls": 0, "sent": 0})


def enqueue(q, body):
    """Puts one message (its body as text) in q; the caller holds LOCK."""
    mid = uuid.uuid4().hex
    q["messages"][mid] = {
        "id": mid, "body": body, "timestamp_ms": int(time.time() * 1000),
        "attempts": 0, "visible_at": 0.0, "lease_id": None,
    }
    return mid


class Handler(BaseHTTPRequestHandler):
    token = ""

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/_test/stats":
            q = queue(parse_qs(url.query).get("queue", [""])[0])
            now = time.time()
            with LOCK:
                visible = sum(1 for m in q["messages"].values() if m["visible_at"] <= now)
                stats = {"visible": visible, "leased": len(q["messages"]) - visible}
                stats.update({k: q[k] for k in ("acked", "retried", "pulls", "sent")})
            return self.reply(200, stats)
        self.reply(404, {"success": False, "errors": [{"code": 7003, "message": "No route"}]})

    def do_POST(self):
        url = urlparse(self.path)
        if url.path == "/_test/send":
            query = parse_qs(url.query)
            q = queue(query.get("queue", [""])[0])
            req = self.body()
            body = json.dumps(req["body"])
            if query.get("encoding", [""])[0] == "base64":
                body = base64.b64encode(body.encode()).decode()
            with LOCK:
                mid = enqueue(q, body)
            return self.reply(200, {"id": mid})
        parts = url.path.strip("/").split("/")
        # client/v4/accounts/{account}/queues/{queue}/messages/{pull|ack}
        if len(parts) != 8 or parts[:3] != ["client", "v4", "accounts"] or parts[4] != "queues" or parts[6] != "messages":
            return self.reply(404, {"success": False, "errors": [{"code": 7003, "message": "No route"}]})
        if self.headers.get("Authorization") != "Bearer " + self.token:
            return self.reply(401, {"success": False, "errors": [{"code": 10000, "message": "Authentication error"}]})
        q, req, now = queue(parts[5]), self.body(), time.time()
        if parts[7] == "pull":
            size = int(req.get("batch_size", 5))
            timeout = int(req.get("visibility_timeout_ms", 30000)) / 1000.0
            out = []
            with LOCK:
                q["pulls"] += 1
                for m in sorted(q["messages"].values(), key=lambda m: m["timestamp_ms"]):
                    if len(out) == size:
                        break
                    if m["visible_at"] > now:
                        continue
                    m["attempts"] += 1
                    m["lease_id"] = uuid.uuid4().hex
                    m["visible_at"] = now + timeout
                    out.append({k: m[k] for k in ("id", "body", "timestamp_ms", "attempts", "lease_id")})
                    out[-1]["metadata"] = {"CF-sourceMessageSource": "r2", "CF-Content-Type": "json"}
                backlog = sum(1 for m in q["messages"].values() if m["visible_at"] <= now)
            result = {"message_backlog_count": backlog, "messages": out}
            return self.reply(200, {"success": True, "errors": [], "messages": [], "result": result})
        if parts[7] == "batch":
            messages = req.get("messages", [])
            if len(messages) > 100:
                return self.reply(400, {"success": False, "errors": [{"code": 10101, "message": "too many messages"}]})
            with LOCK:
                for m in messages:
                    body = m.get("body")
                    enqueue(q, json.dumps(body) if m.get("content_type", "json") == "json" else str(body))
                    q["sent"] += 1
            return self.reply(200, {"success": True, "errors": [], "messages": [], "result": {}})
        if parts[7] == "ack":
            acked, retried, warnings = 0, 0, []
            with LOCK:
                leases = {m["lease_id"]: m for m in q["messages"].values() if m["lease_id"] and m["visible_at"] > now}
                for a in req.get("acks", []):
                    m = leases.pop(a.get("lease_id"), None)
                    if m is None:
                        warnings.append(f"lease {a.get('lease_id')} not found or expired")
                        continue
                    del q["messages"][m["id"]]
                    q["acked"] += 1
                    acked += 1
                for r in req.get("retries", []):
                    m = leases.pop(r.get("lease_id"), None)
                    if m is None:
                        warnings.append(f"lease {r.get('lease_id')} not found or expired")
                        continue
                    m["lease_id"], m["visible_at"] = None, now + float(r.get("delay_seconds", 0))
                    q["retried"] += 1
                    retried += 1
            result = {"ackCount": acked, "retryCount": retried, "warnings": warnings}
            return self.reply(200, {"success": True, "errors": [], "messages": [], "result": result})
        self.reply(404, {"success": False, "errors": [{"code": 7003, "message": "No route"}]})


def main():
    Handler.token = sys.argv[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
