"""The LitServe side: a LitAPI that runs `BatchedGenerator` inside LitServe's inference worker.

LitServe's `ContinuousBatchingLoop` pulls requests off its queue (`add_request`) while it keeps
calling `step()`, which advances every running request by one token and returns one `Output`
per request. The payloads that arrive are plain dicts made by `litgpt_runtime.serve.bridge`:

    {"prompt_ids": [...], "max_new_tokens": n, "temperature": t, "top_k": k, "top_p": p,
     "stop_ids": [...], "seed": s}          a generation request
    {"cancel": "<uid>"}                      the client of request <uid> went away

Each `Output` carries {"token": id | None, "finish": None | "stop" | "length" | "cancelled",
"batch": rows in the forward pass, "rows": rows in use after the step, "device": the worker's
device}; the last one of a request is followed by FINISH_STREAMING so that LitServe forgets the
request. A request that fails alone (see engine.py) gets an ERROR output and the others go on.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any, Optional

import litserve as ls
from litserve.loops.continuous_batching_loop import ContinuousBatchingLoop, Output
from litserve.utils import LitAPIStatus

logger = logging.getLogger("litgpt_runtime.serve")

GENERATE_PATH = "/v1/internal/generate"


class IdleFriendlyLoop(ContinuousBatchingLoop):
    """LitServe's continuous-batching loop, minus its busy-wait while nothing is running.

    Its outer driver calls `run()` again as soon as it returns, and `run()` returns at once when
    there is no work, which would spin a CPU core at 100% on an idle server. We wait for
    `add_request` to signal new work instead (with a short timeout as a safety net).
    """

    def __init__(self) -> None:
        super().__init__(max_sequence_length=1 << 30)
        self._wakeup: Optional[asyncio.Event] = None

    def add_request(self, uid, request, lit_api, lit_spec, transport=None) -> None:
        super().add_request(uid, request, lit_api, lit_spec, transport)
        if self._wakeup is not None:
            self._wakeup.set()

    def has_capacity(self, lit_api) -> bool:
        # the engine keeps its own waiting line; taking requests at once lets cancellations
        # through even when every slot is busy
        return True

    async def run(self, lit_api, *args, **kwargs):
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        if not lit_api.has_active_requests():
            if lit_api.stopping:  # SIGTERM came while rows were running; the last outputs are sent
                raise SystemExit(0)
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=0.05)
            except asyncio.TimeoutError:
                pass
            self._wakeup.clear()
            return
        await super().run(lit_api, *args, **kwargs)


class GenerationAPI(ls.LitAPI):
    """Loads the checkpoint on the worker's device and drives the batched generator."""

    def __init__(
        self,
        checkpoint_dir: Path,
        max_batch_size: int,
        max_seq_length: int,
        precision: Optional[str] = None,
        adapters: tuple[tuple[str, str], ...] = (),
        quantize: Optional[str] = None,
        drain=None,
    ) -> None:
        super().__init__(
            max_batch_size=max_batch_size, stream=True, api_path=GENERATE_PATH, loop=IdleFriendlyLoop()
        )
        self.checkpoint_dir = Path(checkpoint_dir)
        self.max_seq_length = max_seq_length
        self.precision = precision
        self.adapters = tuple((name, str(path)) for name, path in adapters)  # index i + 1 in requests
        self.quantize = quantize  # bitsandbytes mode of the base weights (litgpt_runtime.quantize)
        # {uid: time cancelled}, shared by all workers when there are several (set by
        # bridge.LitGPTServer): a cancel message on the request queue reaches only one of them
        self.cancelled = None
        self._polled = 0.0
        self.stopping = False  # SIGTERM received: exit once no row is left (see drain.py)
        self.drain = drain  # drain.Drain of the server: a SIGTERM to its process group is the main process's to handle

    def setup(self, device: str) -> None:
        import torch

        from litgpt_runtime.generate import load_inference_model
        from litgpt_runtime.serve.engine import BatchedGenerator

        if self.quantize:
            from litgpt_runtime.generate import pick_dtype
            from litgpt_runtime.quantize import load_quantized_model

            model = load_quantized_model(self.checkpoint_dir, self.quantize, torch.device(device),
                                         pick_dtype(self.precision, torch.device(device)))
        else:
            model = load_inference_model(self.checkpoint_dir, torch.device(device), self.precision)
        dtype = next(model.parameters()).dtype
        rows = None
        if self.adapters:
            from litgpt_runtime.serve.adapters import attach_adapters

            rows = attach_adapters(model, [(name, Path(path)) for name, path in self.adapters], self.checkpoint_dir)
        self.engine = BatchedGenerator(model, self.max_batch_size, self.max_seq_length, adapter_rows=rows,
                                       adapters=len(self.adapters))
        self.device_name = device
        self._inbox: "queue.SimpleQueue[tuple[str, dict]]" = queue.SimpleQueue()
        if threading.current_thread() is threading.main_thread():
            from litgpt_runtime.serve.drain import main_process_decides

            signal.signal(signal.SIGTERM, self._on_sigterm if self.drain is None
                          else main_process_decides(self.drain, self._on_sigterm))
        logger.info("Model %s ready on %s (%s%s, %d slots, %d LoRA adapters)", self.checkpoint_dir, device, dtype,
                    f", base weights quantized with {self.quantize}" if self.quantize else "", self.max_batch_size,
                    len(self.adapters))

    def _on_sigterm(self, signum, frame) -> None:
        """Exit now when idle; otherwise when the running rows are done (IdleFriendlyLoop.run)."""
        self.stopping = True
        if not self.has_active_requests():
            raise SystemExit(0)

    # -- hooks of ContinuousBatchingLoop; add_request runs on the loop's thread, step on another --
    def add_request(self, uid: str, request: Any) -> None:
        self._inbox.put((uid, request))

    def has_capacity(self) -> bool:
        return True

    def has_active_requests(self) -> bool:
        return not self._inbox.empty() or self.engine.has_work()

    def decode_request(self, request: dict):
        from litgpt_runtime.serve.engine import GenerationRequest
        from litgpt_runtime.serve.sampling import SamplingParams

        return GenerationRequest(
            prompt_ids=[int(t) for t in request["prompt_ids"]],
            max_new_tokens=int(request["max_new_tokens"]),
            sampling=SamplingParams(
                temperature=float(request.get("temperature", 0.0)),
                top_k=request.get("top_k"),
                top_p=float(request.get("top_p", 1.0)),
            ),
            stop_ids=tuple(int(t) for t in request.get("stop_ids", ())),
            seed=request.get("seed"),
            adapter=int(request.get("adapter", 0)),
        )

    def _cancel(self, key: str) -> list[Output]:
        if not self.engine.cancel(key):
            return []
        if self.cancelled is not None:
            self.cancelled.pop(key, None)
        # LitServe still tracks the cancelled request: close it (nobody listens any more)
        return [Output(key, self._event_output(None, "cancelled", 0), LitAPIStatus.OK),
                Output(key, "", LitAPIStatus.FINISH_STREAMING)]

    def _poll_cancelled(self) -> list[Output]:
        """Cancellations another worker took off the queue (several workers only; every 20 ms)."""
        now = time.time()
        if self.cancelled is None or now - self._polled < 0.02 or not self.engine.has_work():
            return []
        self._polled = now
        outputs: list[Output] = []
        for key, when in list(self.cancelled.items()):
            outputs += self._cancel(key)
            if now - when > 120:  # finished before the cancel arrived: nobody owns it
                self.cancelled.pop(key, None)
        return outputs

    def _drain_inbox(self) -> list[Output]:
        outputs: list[Output] = []
        while True:
            try:
                uid, request = self._inbox.get_nowait()
            except queue.Empty:
                return outputs + self._poll_cancelled()
            if "cancel" in request:
                outputs += self._cancel(request["cancel"])
                # the answer to the cancel message itself: the rows now in use (for the metrics)
                outputs.append(Output(uid, self._event_output(None, "cancelled", 0), LitAPIStatus.OK))
                outputs.append(Output(uid, "", LitAPIStatus.FINISH_STREAMING))
                continue
            try:
                self.engine.submit(uid, self.decode_request(request))
            except (KeyError, TypeError, ValueError) as error:
                outputs.append(Output(uid, ValueError(f"bad generation request: {error}"), LitAPIStatus.ERROR))

    def _event_output(self, token: Optional[int], finish: Optional[str], batch: int) -> dict:
        return {"token": token, "finish": finish, "batch": batch, "rows": self.engine.active,
                "device": self.device_name}

    def step(self, prev_outputs: Optional[list[Output]]) -> list[Output]:
        outputs = self._drain_inbox()
        try:
            events = self.engine.step()
        except Exception as error:  # a bug or OOM in the shared forward pass: fail its rows, keep serving
            logger.exception("generation step failed")
            return outputs + [Output(key, RuntimeError(f"generation step failed: {error}"), LitAPIStatus.ERROR)
                              for key in self.engine.reset()]
        for event in events:
            if event.finish_reason == "error":
                logger.error("request %s failed: %s", event.key, event.error)
                outputs.append(Output(event.key, RuntimeError(event.error), LitAPIStatus.ERROR))
                continue
            outputs.append(Output(event.key, self._event_output(event.token_id, event.finish_reason, event.batch_size),
                                  LitAPIStatus.OK))
            if event.finish_reason is not None:
                outputs.append(Output(event.key, "", LitAPIStatus.FINISH_STREAMING))
        return outputs

    def encode_response(self, output: Any) -> Any:
        return output
