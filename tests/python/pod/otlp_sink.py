"""The downstream of the pod test: an OTLP/gRPC logs receiver in a pod of its own.

Runs in the FastAPI example's image (grpcio and opentelemetry-proto are
there), mounted from the repository:

    python3 otlp_sink.py            (OTLP/gRPC on 0.0.0.0:4317, control on 0.0.0.0:8080)

Control, over HTTP on port 8080:
    GET  /records  every log record received: [{"body": ..., "attributes": {...}}]
    POST /down     the OTLP port closes (connections refused), as a downstream that is down
    POST /up       the OTLP port listens again
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import socket
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

OTLP_LISTEN = "0.0.0.0:4317"
CONTROL_PORT = 8080


def value(v):
    kind = v.WhichOneof("value")
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def received(request) -> list[dict]:
    return [
        {"body": value(lr.body), "attributes": {kv.key: value(kv.value) for kv in lr.attributes}}
        for rl in request.resource_logs
        for sl in rl.scope_logs
        for lr in sl.log_records
    ]


class Receiver(logs_service_pb2_grpc.LogsServiceServicer):
    """The OTLP/gRPC server, in a child process: what it received goes to the
    parent over a pipe before the request is answered."""

    def __init__(self, conn):
        self.conn, self.lock = conn, threading.Lock()

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        got = received(request)
        with self.lock:
            self.conn.send(got)
        return logs_service_pb2.ExportLogsServiceResponse()


def serve(conn):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Receiver(conn), server)
    server.add_insecure_port(OTLP_LISTEN)
    server.start()
    server.wait_for_termination()


class Sink:
    """Down is the OTLP server's process killed: its port closes, its
    connections are reset, as a downstream that crashed. A fresh process
    each time, so nothing of the stopped server is left in the one that
    answers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records: list[dict] = []
        self.proc = None

    def collect(self, conn):
        while True:
            try:
                got = conn.recv()
            except (EOFError, OSError):
                return
            with self.lock:
                self.records.extend(got)

    def up(self):
        if self.proc is not None:
            return
        ctx = multiprocessing.get_context("fork")
        mine, theirs = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=serve, args=(theirs,), daemon=True)
        self.proc.start()
        theirs.close()
        threading.Thread(target=self.collect, args=(mine,), daemon=True).start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", 4317), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the OTLP server did not listen within 10 s")

    def down(self):
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.join()


SINK = Sink()
# one /up or /down at a time
SINK_CONTROL = threading.Lock()


class Control(BaseHTTPRequestHandler):
    def _answer(self, code: int, payload):
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server method name
        if self.path != "/records":
            return self._answer(404, {"error": f"no {self.path}"})
        with SINK.lock:
            records = list(SINK.records)
        return self._answer(200, records)

    def do_POST(self):  # noqa: N802 - http.server method name
        actions = {"/down": SINK.down, "/up": SINK.up}
        if self.path not in actions:
            return self._answer(404, {"error": f"no {self.path}"})
        with SINK_CONTROL:
            actions[self.path]()
            listening = SINK.proc is not None
        return self._answer(200, {"listening": listening})

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    # PID 1 of its container: stop at once on the engine's SIGTERM
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    SINK.up()
    print(f"otlp sink: OTLP/gRPC on {OTLP_LISTEN}, control on :{CONTROL_PORT}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", CONTROL_PORT), Control).serve_forever()
