"""A small OTLP/HTTP receiver on loopback: decodes the protobuf export requests it is sent.

It stands in for an OpenTelemetry Collector (none is installed here); the decoding is the
official ``opentelemetry-proto`` messages, so what it reads is what a collector would.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.metrics: dict[str, list[dict[str, Any]]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/traces":
                    req = trace_service_pb2.ExportTraceServiceRequest()
                    req.ParseFromString(body)
                    receiver._spans(req)
                    resp: Any = trace_service_pb2.ExportTraceServiceResponse()
                elif self.path == "/v1/metrics":
                    req2 = metrics_service_pb2.ExportMetricsServiceRequest()
                    req2.ParseFromString(body)
                    receiver._metrics(req2)
                    resp = metrics_service_pb2.ExportMetricsServiceResponse()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                out = resp.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _spans(self, req: Any) -> None:
        with self.lock:
            for rs in req.resource_spans:
                res = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        self.spans.append(
                            {
                                "name": sp.name,
                                "resource": res,
                                "attributes": {a.key: _value(a.value) for a in sp.attributes},
                                "events": [
                                    (e.name, {a.key: _value(a.value) for a in e.attributes})
                                    for e in sp.events
                                ],
                            }
                        )

    def _metrics(self, req: Any) -> None:
        with self.lock:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        points = getattr(m, kind).data_points
                        self.metrics.setdefault(m.name, []).extend(
                            {a.key: _value(a.value) for a in p.attributes} for p in points
                        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
