"""`GET /ready`: 200 only when the model answers, not merely when it has loaded (`/health`).

The check is a real 1-token greedy generation through the same worker and batch as every request,
so corrupt weights (non-finite logits fail the row, see engine.py) or a dead worker make it fail.
It stays cheap enough for a probe every few seconds: a token generated for any request within
`FRESH_SECONDS` counts as the answer (a busy server is not made to wait in its own line), a probe's
result is reused for `FRESH_SECONDS`, and concurrent probes share one generation.
"""

from __future__ import annotations

import asyncio
import time
from typing import Optional

FRESH_SECONDS = 2.0
PROBE_TIMEOUT_SECONDS = 20.0
PROBE_PROMPT = "Ready?"


class Readiness:
    def __init__(self) -> None:
        self.last_token = float("-inf")  # monotonic time of the last token generated for anyone
        self._checked = float("-inf")
        self._result: tuple[bool, str] = (False, "not checked yet")
        self._probe: Optional[asyncio.Future] = None
        self._prompt_ids: Optional[list[int]] = None

    def token_generated(self) -> None:
        self.last_token = time.monotonic()

    async def check(self, state, app) -> tuple[bool, str]:
        """(ready, why not)."""
        now = time.monotonic()
        if now - self.last_token < FRESH_SECONDS:
            return True, "ok"
        if now - self._checked < FRESH_SECONDS:
            return self._result
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._generate_one(state, app))
        try:
            self._result = await asyncio.wait_for(asyncio.shield(self._probe), PROBE_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            self._result = (False, f"no token within {PROBE_TIMEOUT_SECONDS:.0f} s")
        self._checked = time.monotonic()
        return self._result

    async def _generate_one(self, state, app) -> tuple[bool, str]:
        from litgpt_runtime.serve.bridge import WorkerError

        base = state.base
        if self._prompt_ids is None:
            self._prompt_ids = base.tokenizer.encode(PROBE_PROMPT)
        payload = {"prompt_ids": self._prompt_ids, "max_new_tokens": 1, "temperature": 0.0, "top_k": None,
                   "top_p": 1.0, "stop_ids": [], "seed": None, "adapter": 0}
        outputs = state.bridge.generate(app, payload)
        try:
            async for output in outputs:
                if output.get("finish") is not None:
                    return True, "ok"
        except WorkerError as error:
            return False, f"the model failed a 1-token generation: {error}"
        finally:
            await outputs.aclose()
        return False, "the generation ended without a token"
