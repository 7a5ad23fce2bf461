"""Where the instrumentation's spans and metrics go, for applications that set up nothing.

``configure(otlp=..., prometheus_addr=...)`` installs an SDK tracer and meter provider only when
the application has not installed its own (an application's provider is never replaced):

- OTLP over HTTP/protobuf to the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the per-signal
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``..._METRICS_ENDPOINT``), ``OTEL_SERVICE_NAME`` etc.;
- a Prometheus exposition of the OTel metrics (``/metrics`` on ``prometheus_addr``) for users
  without a collector.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api

log = logging.getLogger(__name__)


@dataclass
class Telemetry:
    tracer_provider: Any | None
    meter_provider: Any | None
    prometheus_server: Any | None = None

    def shutdown(self) -> None:
        for p in (self.tracer_provider, self.meter_provider):
            if p is not None:
                try:
                    p.shutdown()
                except Exception as e:  # best effort at exit
                    log.debug("telemetry shutdown: %s", e)
        if self.prometheus_server is not None:
            self.prometheus_server.shutdown()


def _provider_set(current: Any, proxy_name: str) -> bool:
    return type(current).__name__ not in (proxy_name, "NoOpTracerProvider", "NoOpMeterProvider")


def configure(
    *,
    otlp: bool = False,
    prometheus_addr: tuple[str, int] | None = None,
    service_name: str = "syncmon-avatar",
    metric_interval_s: float = 5.0,
) -> Telemetry:
    """Install providers with OTLP/HTTP and/or Prometheus export, unless the app has its own."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": service_name}).merge(
        OTELResourceDetector().detect()
    )
    tel = Telemetry(None, None)
    if _provider_set(trace_api.get_tracer_provider(), "ProxyTracerProvider"):
        log.info("a tracer provider is set already: syncmon adds nothing to it")
    elif otlp:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tp = TracerProvider(resource=resource)
        tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace_api.set_tracer_provider(tp)
        tel.tracer_provider = tp
    readers: list[MetricReader] = []
    if otlp:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(), export_interval_millis=metric_interval_s * 1000
            )
        )
    if prometheus_addr is not None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        readers.append(PrometheusMetricReader())
        server, _thread = start_http_server(prometheus_addr[1], addr=prometheus_addr[0])
        tel.prometheus_server = server
    if readers:
        if _provider_set(metrics_api.get_meter_provider(), "_ProxyMeterProvider"):
            log.info("a meter provider is set already: syncmon adds nothing to it")
        else:
            mp = MeterProvider(resource=resource, metric_readers=readers)
            metrics_api.set_meter_provider(mp)
            tel.meter_provider = mp
    return tel
