"""OpenTelemetry tracing for the request path (config only for now; spans follow)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TelemetryConfig(BaseModel):
    """Where spans go and what they may contain."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exporter: Literal["none", "console", "otlp"] = Field(
        "none", description="Span exporter: none (spans dropped), console (stdout) or otlp (HTTP)."
    )
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces; required when "
        "exporter=otlp.",
    )
    service_name: str = Field("llm-router", min_length=1, description="OpenTelemetry service.name.")
    record_prompts: bool = Field(
        False, description="Put prompt and answer text on spans. Off by default: prompts may be private."
    )

    @model_validator(mode="after")
    def _endpoint(self) -> TelemetryConfig:
        if self.exporter == "otlp" and not self.otlp_endpoint:
            raise ValueError("exporter=otlp needs otlp_endpoint")
        return self
