"""ray.serve.llm start-up callback for models that are already on local disk.

Before starting an engine, ray.serve.llm runs a "download model files" Ray task on every node of the
engine's placement group. For a model directory prepared by `routerctl prepare-models` there is nothing
to download (the task returns the same path), yet the task needs a Ray worker process of its own. This
callback (`LLMConfig.callback_config`, ray.serve.llm's hook) skips that step when the model source is an
existing local directory; hub ids and remote URIs still go through it. (Measured gain at start-up is
small, 3-5 s on 2 cores: the import of vLLM in the replica, not the task, fills most of that gap.)
"""

from __future__ import annotations

import os

from ray.llm._internal.common.callbacks.base import CallbackBase


class PreparedModelCallback(CallbackBase):
    async def on_before_node_init(self) -> None:
        source = getattr(self.llm_config.model_loading_config, "model_source", None)
        if isinstance(source, str) and os.path.isdir(source):
            self.ctx.run_init_node = False
