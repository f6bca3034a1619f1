"""OpenTelemetry tracing for the request path.

One SERVER span per request, a `router.decide` span with the candidates, predictions and choice, and
a CLIENT span per upstream call, with gen_ai.* semantic-convention names plus router.* attributes.
Prompt and answer text are recorded only when `record_prompts` is on; keys never are.
"""

from __future__ import annotations

from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from pydantic import BaseModel, ConfigDict, Field, model_validator


class TelemetryConfig(BaseModel):
    """Where spans go and what they may contain."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exporter: Literal["none", "console", "otlp"] = Field(
        default="none", description="Span exporter: none (spans dropped), console (stdout) or otlp (HTTP)."
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces; required when "
        "exporter=otlp.",
    )
    service_name: str = Field(default="llm-router", min_length=1, description="OpenTelemetry service.name.")
    record_prompts: bool = Field(
        default=False,
        description="Put prompt and answer text on spans. Off by default: prompts may be private.",
    )

    @model_validator(mode="after")
    def _endpoint(self) -> TelemetryConfig:
        if self.exporter == "otlp" and not self.otlp_endpoint:
            raise ValueError("exporter=otlp needs otlp_endpoint")
        return self


# -- tracing ---------------------------------------------------------------------------------------
_OPERATION = {"chat": "chat", "completions": "text_completion"}
_PATH = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


def build_tracer_provider(config: TelemetryConfig) -> TracerProvider | trace.NoOpTracerProvider:
    """The provider the config asks for (start-up only; exporters run in a background thread)."""
    if config.exporter == "none":
        return trace.NoOpTracerProvider()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
    if config.exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.otlp_endpoint)))
    return provider


class Telemetry:
    """Spans for the request path, from a provider of its own (never the global one)."""

    def __init__(
        self,
        config: TelemetryConfig | None = None,
        provider: TracerProvider | trace.NoOpTracerProvider | None = None,
    ) -> None:
        self.config = config or TelemetryConfig()
        self.provider = provider if provider is not None else build_tracer_provider(self.config)
        self.tracer = self.provider.get_tracer("router")
        self.record_prompts = self.config.record_prompts

    def server(self, endpoint: str, requested_model: str | None) -> Span:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": _OPERATION.get(endpoint, endpoint),
            "http.request.method": "POST",
            "url.path": _PATH.get(endpoint, endpoint),
        }
        if requested_model:
            attrs["gen_ai.request.model"] = requested_model
        return self.tracer.start_span(
            f"POST {_PATH.get(endpoint, endpoint)}", kind=SpanKind.SERVER, attributes=attrs
        )

    def decide(self, parent: Span) -> Span:
        return self.tracer.start_span(
            "router.decide", context=trace.set_span_in_context(parent), kind=SpanKind.INTERNAL
        )

    def client(self, parent: Span, endpoint: str, target: str, attempt: int) -> Span:
        op = _OPERATION.get(endpoint, endpoint)
        return self.tracer.start_span(
            f"{op} {target}",
            context=trace.set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": op,
                "gen_ai.request.model": target,
                "router.target": target,
                "router.attempt": attempt,
            },
        )

    def prompt(self, span: Span, text: str) -> None:
        if self.record_prompts:
            span.set_attribute("gen_ai.prompt", text)

    def shutdown(self) -> None:
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


def decision_attributes(decision: Any) -> dict[str, Any]:
    """router.* attributes of a policies.types.Decision: candidates, predictions and the choice."""
    c = decision.candidates
    attrs: dict[str, Any] = {
        "router.outcome": decision.outcome,
        "router.reason": decision.reason,
        "router.alternates": list(decision.alternates),
        "router.candidates": [e.target for e in c],
        "router.candidates.quality": [float(e.quality) for e in c],
        "router.candidates.ttft_ms": [float(e.ttft_ms) for e in c],
        "router.candidates.e2e_ms": [float(e.e2e_ms) for e in c],
        "router.candidates.cost_usd": [float(e.cost_usd) for e in c],
        "router.candidates.fits": [bool(e.fits) for e in c],
    }
    if decision.target is not None:
        attrs["router.chosen"] = decision.target
    for name in ("quality", "latency_ms", "cost_usd"):
        value = getattr(decision, f"predicted_{name}")
        if value is not None:
            attrs[f"router.predicted.{name}"] = float(value)
    return attrs


def record_error(span: Span, exc: BaseException) -> None:
    """Mark a span failed with the error's class and code only (messages may echo inputs)."""
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    span.set_attribute("error.type", getattr(exc, "code", None) or type(exc).__name__)
