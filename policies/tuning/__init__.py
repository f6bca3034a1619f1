"""Policy-tuning lab: datasets, RouteLLM/RouterBench metrics, offline eval, training, calibration,
collection from a running cluster, and a discrete-event cluster simulator.

Nothing here imports Ray; heavy libraries (torch, transformers, sklearn, matplotlib) are imported inside
the functions that need them. CLI: `routerctl tune ...` or `python -m policies.tuning ...`.
"""
