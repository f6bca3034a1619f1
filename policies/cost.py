"""Cost model: what one request is expected to cost on a target, in USD.

Providers bill per token, so the expected cost is input tokens x input price + expected output tokens x
output price (`Target.expected_cost_usd`). A local model has no bill; its price is what its hardware
costs per hour spread over the tokens it can produce in that hour, so that "cheapest" compares local and
API targets on one scale. Config calls `local_price_per_mtok` when a local model has no price set.
"""

from __future__ import annotations

from policies.types import RouteRequest, Target


def expected_cost_usd(target: Target, request: RouteRequest) -> float:
    """Expected USD for the request on the target (planned output length, not max_tokens)."""
    return target.expected_cost_usd(request.prompt_tokens, request.output_tokens)


def local_price_per_mtok(hourly_cost_usd: float, tokens_per_s: float) -> float:
    """USD per 1M tokens for a local model from its hardware cost per hour and measured throughput.

    Throughput is the aggregate over all concurrent requests of one replica at its usual load (tokens
    per second summed over the batch), because the hardware bill is paid once for the whole batch.
    """
    if hourly_cost_usd < 0:
        raise ValueError("hourly_cost_usd must be >= 0")
    if tokens_per_s <= 0:
        raise ValueError("tokens_per_s must be > 0")
    return hourly_cost_usd / (tokens_per_s * 3600.0) * 1e6


def local_prices(
    hourly_cost_usd: float,
    output_tokens_per_s: float,
    input_tokens_per_s: float | None = None,
) -> tuple[float, float]:
    """(input, output) USD per 1M tokens for a local model.

    Prefill is much faster than decode, so input tokens are cheaper; without a measured prefill rate we
    assume prefill runs 10x the decode rate, a conservative figure for CPU and GPU engines alike.
    """
    out = local_price_per_mtok(hourly_cost_usd, output_tokens_per_s)
    inp_rate = input_tokens_per_s if input_tokens_per_s is not None else 10.0 * output_tokens_per_s
    return local_price_per_mtok(hourly_cost_usd, inp_rate), out


def with_local_price(
    target: Target,
    hourly_cost_usd: float,
    output_tokens_per_s: float,
    input_tokens_per_s: float | None = None,
) -> Target:
    """A copy of a local target whose unset (zero) prices are derived from hardware cost/throughput."""
    if target.kind != "local" or (target.input_price_per_mtok or target.output_price_per_mtok):
        return target
    inp, out = local_prices(hourly_cost_usd, output_tokens_per_s, input_tokens_per_s)
    return target.model_copy(update={"input_price_per_mtok": inp, "output_price_per_mtok": out})
