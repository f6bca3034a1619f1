"""Typed entry for one local (vLLM) model in cluster.yaml. No I/O here.

Two layers, so that a change to what only routing reads never restarts an engine:
- `EngineConfig`: what the engine is built from (source, placement, replicas, engine_kwargs). It is the
  whole `args` of a model's own Serve application (`router.app:build_model`); Serve restarts that
  model's replicas when these args change, and only then.
- `LocalModelConfig` = EngineConfig + what the router alone reads (prices, priors, cold-start prior, the
  application serving it). It is an entry of the router app's `models`; cluster.yaml writes the engine
  part once (a YAML anchor) and merges it into the router's entry (`<<:`), see docs/router.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.types import LatencyPrior, Target

_STRICT = ConfigDict(frozen=True, extra="forbid")


class Autoscaling(BaseModel):
    model_config = _STRICT

    min_replicas: int = Field(1, ge=0, description="Fewest replicas Serve keeps.")
    max_replicas: int = Field(1, ge=1, description="Most replicas Serve starts.")
    target_ongoing_requests: float = Field(8, gt=0, description="Requests per replica Serve aims at.")
    upscale_delay_s: float | None = Field(
        None, ge=0, description="Serve's upscale delay (None: Serve's default; scaling from zero skips it)."
    )
    downscale_delay_s: float | None = Field(
        None, ge=0, description="Idle time before Serve removes a replica (None: Serve's default, 600 s)."
    )

    @model_validator(mode="after")
    def _order(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must be <= max_replicas")
        return self


class CpuPlacement(BaseModel):
    """Resources of a CPU engine. Ray counts logical CPUs; fractions let two engines share 2 cores."""

    model_config = _STRICT

    replica_cpus: float = Field(0.25, gt=0, description="num_cpus of the Serve replica actor.")
    engine_cpus: float = Field(0.5, gt=0, description="CPU of the engine's placement bundle.")
    omp_threads_bind: str = Field(
        "auto",
        description="VLLM_CPU_OMP_THREADS_BIND for this engine ('auto' = one core per engine, round robin;"
        " e.g. '0-3' or '0|1' for explicit cores).",
    )
    auto_index: int | None = Field(
        None,
        ge=0,
        description="With omp_threads_bind 'auto' for a model in its own application: which CPU engine of "
        "the machine this is (core = auto_index mod cores). Models bound in the router's app are numbered "
        "in config order instead.",
    )


class EngineConfig(BaseModel):
    """What one vLLM model deployment (ray.serve.llm) is built from: the args of its own application."""

    model_config = _STRICT

    id: str = Field(..., pattern=r"^[A-Za-z0-9][\w.:-]*$", description="Target id clients pin with.")
    source: str = Field(
        ..., description="'package:<pkg>' (packaged GGUF), a local path, or a hub id 'org/name'."
    )
    accelerator: Literal["cpu", "gpu"] = Field("cpu", description="Where the engine runs.")
    accelerator_type: str | None = Field(None, description="GPU type, e.g. 'A100', 'L4' (GPU only).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one engine spans (GPU only).")
    gpu_fraction: float = Field(
        1.0, gt=0, le=1, description="Share of one GPU an engine takes (GPU only, tensor_parallel_size 1): "
        "e.g. 0.4 puts two small models on one GPU; give engine_kwargs.gpu_memory_utilization to match."
    )
    num_replicas: int | None = Field(1, ge=1, description="Fixed replica count (None with autoscaling).")
    autoscaling: Autoscaling | None = Field(
        None, description="Autoscaling instead of num_replicas (min_replicas 0: the model scales from zero)."
    )
    max_ongoing_requests: int = Field(16, ge=1, description="Requests Serve sends one replica at once.")
    max_replicas_per_node: int | None = Field(
        None, ge=1, description="Spread replicas: at most this many on one node (multi-node clusters)."
    )
    context_window: int = Field(2048, ge=64, description="max_model_len of the engine.")
    kv_cache_memory_bytes: int | None = Field(
        256 * 2**20, ge=2**20, description="KV cache size; set on CPU so vLLM does not reserve most RAM."
    )
    cpu: CpuPlacement = Field(default_factory=CpuPlacement, description="CPU engine resources.")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Passed to vLLM unchanged (the only free-form mapping)."
    )
    cache_dir: str | None = Field(
        None, description="Prepared-model cache of this model (default: the router's cache_dir, "
        "$ROUTER_CACHE_DIR, ~/.cache/llm-router)."
    )

    @model_validator(mode="after")
    def _check_engine(self) -> EngineConfig:
        if self.autoscaling is not None and self.num_replicas not in (None, 1):
            raise ValueError("give either num_replicas or autoscaling, not both")
        if self.accelerator == "cpu" and (self.tensor_parallel_size != 1 or self.accelerator_type
                                          or self.gpu_fraction != 1):
            raise ValueError("tensor_parallel_size, accelerator_type and gpu_fraction apply to accelerator: gpu only")
        if self.gpu_fraction != 1 and self.tensor_parallel_size != 1:
            raise ValueError("gpu_fraction below 1 needs tensor_parallel_size 1")
        return self

    def engine(self) -> EngineConfig:
        """Only the engine part (what a model application's args must equal)."""
        return EngineConfig.model_validate(self.model_dump(include=set(EngineConfig.model_fields)))

    @property
    def scales_from_zero(self) -> bool:
        return self.autoscaling is not None and self.autoscaling.min_replicas == 0


class LocalModelConfig(EngineConfig):
    """One local model as the router sees it: the engine part plus what only routing reads."""

    app: str | None = Field(
        None,
        description="Name of the Serve application that serves this model (its args: the engine part), so "
        "router changes never restart it. None: the router binds the engine in its own application.",
    )
    input_price_per_mtok: float | None = Field(None, ge=0, description="USD per 1M input tokens.")
    output_price_per_mtok: float | None = Field(None, ge=0, description="USD per 1M output tokens.")
    hourly_cost_usd: float | None = Field(
        None, ge=0, description="Hardware cost per hour; with throughput_tok_s gives the price per token."
    )
    throughput_tok_s: float | None = Field(None, gt=0, description="Measured output tokens per second.")
    quality_prior: float = Field(0.5, ge=0, le=1, description="P(acceptable) before any learned model.")
    latency: LatencyPrior = Field(default_factory=LatencyPrior, description="Cold-start latency prior.")
    cold_start_s: float = Field(
        90.0, gt=0, description="Seconds from waking a scaled-to-zero model to its first answer (the prior; "
        "the router measures each wake-up and uses that from then on)."
    )
    tags: tuple[str, ...] = Field((), description="Free labels.")
    supports_tools: bool = Field(
        False, description="Tool calling is enabled for this model: requests with `tools` go only to targets "
        "with it. Needs engine_kwargs enable_auto_tool_choice: true and tool_call_parser (vLLM's parser for "
        "the model's tool-call format, e.g. hermes, llama3_json, mistral)."
    )

    @model_validator(mode="after")
    def _check_tools(self) -> LocalModelConfig:
        kw = self.engine_kwargs
        if self.supports_tools and not (kw.get("enable_auto_tool_choice") is True and kw.get("tool_call_parser")):
            raise ValueError("supports_tools: true needs engine_kwargs enable_auto_tool_choice: true and "
                             "tool_call_parser (e.g. hermes)")
        return self

    @model_validator(mode="after")
    def _check_prices(self) -> LocalModelConfig:
        priced = self.input_price_per_mtok is not None or self.output_price_per_mtok is not None
        derived = self.hourly_cost_usd is not None or self.throughput_tok_s is not None
        if priced and derived:
            raise ValueError("give prices per 1M tokens or hourly_cost_usd + throughput_tok_s, not both")
        if (self.hourly_cost_usd is None) != (self.throughput_tok_s is None):
            raise ValueError("hourly_cost_usd and throughput_tok_s go together")
        return self

    def prices(self) -> tuple[float, float]:
        """(input, output) USD per 1M tokens; derived from hardware cost over throughput if not set."""
        if self.hourly_cost_usd is not None and self.throughput_tok_s is not None:
            from policies.cost import local_prices

            return local_prices(self.hourly_cost_usd, self.throughput_tok_s)
        return self.input_price_per_mtok or 0.0, self.output_price_per_mtok or 0.0

    def target(self) -> Target:
        """The policy-side view of this model (kind="local")."""
        inp, out = self.prices()
        replicas = self.num_replicas or (self.autoscaling.min_replicas if self.autoscaling else 1)
        return Target(
            id=self.id,
            kind="local",
            input_price_per_mtok=inp,
            output_price_per_mtok=out,
            context_window=self.context_window,
            quality_prior=self.quality_prior,
            latency=self.latency,
            replicas=max(1, replicas),
            tags=self.tags,
            supports_tools=self.supports_tools,
        )
