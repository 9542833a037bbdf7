#!/usr/bin/env python3
"""An OTLP/HTTP logs receiver for the end-to-end tests.

It decodes every request with the OpenTelemetry project's own Python package
(opentelemetry-proto, from PyPI), not with anything of sshlogin's, and prints
one JSON line per request: the headers that matter, the status it answered
and the decoded records. Protobuf bodies go through ParseFromString; JSON
bodies through json_format.Parse after the hex trace/span ids are turned into
the base64 that the protobuf JSON mapping expects.

With --webhook it takes sshlogin's webhook bodies instead (a JSON object,
or an array of them, as `sshlogin run --stdout` prints) and reports their
records in the same shape.

Usage: otlp_receiver.py [--webhook] [--port N] [--tls CERT KEY [--client-ca CA]]
                        [--script-for USER] [STATUS[:RETRY_AFTER]]...
The statuses answer the first requests in order; after them, 200. With
--script-for they answer only the requests that carry a record of USER,
and every other request gets 200: the daemon reports every login on the
host, including those of tests running beside this one. With
--tls it serves HTTPS; with --client-ca it requires a client certificate
signed by CA (mTLS). The first line printed is the port it listens on.
"""

import argparse
import base64
import gzip
import json
import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

ARGS = argparse.ArgumentParser()
ARGS.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
ARGS.add_argument("--client-ca")
ARGS.add_argument("--port", type=int, default=0)
ARGS.add_argument("--webhook", action="store_true")
ARGS.add_argument("--script-for", metavar="USER")
ARGS.add_argument("script", nargs="*")
OPTS = ARGS.parse_args()
SCRIPT = [arg.split(":") for arg in OPTS.script]


def hex_ids_to_base64(doc):
    for rl in doc.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            for rec in sl.get("logRecords", []):
                for key in ("traceId", "spanId"):
                    if key in rec:
                        rec[key] = base64.b64encode(bytes.fromhex(rec[key])).decode()


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def flat(request):
    out = []
    for rl in request.resource_logs:
        resource = {kv.key: value(kv.value) for kv in rl.resource.attributes}
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                out.append({
                    "event_name": rec.event_name,
                    "time_unix_nano": rec.time_unix_nano,
                    "observed_time_unix_nano": rec.observed_time_unix_nano,
                    "severity_number": rec.severity_number,
                    "severity_text": rec.severity_text,
                    "body": value(rec.body),
                    "attributes": {kv.key: value(kv.value) for kv in rec.attributes},
                    "resource": resource,
                    "scope": {"name": sl.scope.name, "version": sl.scope.version},
                })
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, retry_after=None, body=b"", content_type="application/x-protobuf"):
        self.send_response(status)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        line = {
            "path": self.path,
            "content_type": self.headers.get("Content-Type"),
            "content_encoding": self.headers.get("Content-Encoding"),
            "authorization": self.headers.get("Authorization"),
            "user_agent": self.headers.get("User-Agent"),
        }
        if OPTS.tls:
            peer = self.connection.getpeercert()
            subject = dict(x[0] for x in peer["subject"]) if peer else {}
            line["client_cert_cn"] = subject.get("commonName")
        try:
            body = gzip.decompress(raw) if line["content_encoding"] == "gzip" else raw
            request = ExportLogsServiceRequest()
            if OPTS.webhook:
                if line["content_type"] != "application/json":
                    raise ValueError(f"unexpected Content-Type {line['content_type']!r}")
                doc = json.loads(body)
                line["batch"] = isinstance(doc, list)
                line["records"] = doc if isinstance(doc, list) else [doc]
            elif line["content_type"] == "application/json":
                doc = json.loads(body)
                hex_ids_to_base64(doc)
                json_format.Parse(json.dumps(doc), request)
            elif line["content_type"] == "application/x-protobuf":
                request.ParseFromString(body)
            else:
                raise ValueError(f"unexpected Content-Type {line['content_type']!r}")
            if not OPTS.webhook:
                line["records"] = flat(request)
        except Exception as e:  # the test reads the error from the line
            line["error"] = f"{type(e).__name__}: {e}"
            line["status"] = 400
            print(json.dumps(line), flush=True)
            self.reply(400, body=b"cannot decode")
            return
        status, retry_after = (200, None)
        scripted = OPTS.script_for is None or any(
            r.get("attributes", {}).get("user.name") == OPTS.script_for for r in line["records"]
        )
        if SCRIPT and scripted:
            step = SCRIPT.pop(0)
            status = int(step[0])
            retry_after = step[1] if len(step) > 1 else None
        line["status"] = status
        print(json.dumps(line), flush=True)
        ok = ExportLogsServiceResponse().SerializeToString() if status == 200 else b""
        self.reply(status, retry_after, ok)


ThreadingHTTPServer.allow_reuse_address = True
server = ThreadingHTTPServer(("127.0.0.1", OPTS.port), Handler)
if OPTS.tls:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*OPTS.tls)
    if OPTS.client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(OPTS.client_ca)
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
