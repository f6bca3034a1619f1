"""The parts of `benchmarks/overhead.py` (routing overhead, P1).

load     closed-loop HTTP client, latency percentiles, readiness and answer checks, CPU meter
procs    processes outside Ray (fake OpenAI server, LiteLLM proxy), Ray start, py-spy profile
fake     the fake-engine paths (FakeLLM, Ray Serve LLM with a fake LLMEngine)
vllm     the same paths in front of one real vLLM CPU engine (SmolLM2)
report   summary keys, markdown table, the results document
run      command line and the measurement loop
"""
