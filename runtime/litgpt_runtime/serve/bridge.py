"""Our HTTP routes talk to LitServe's inference worker through LitServe's own queues.

A route validates and tokenises a request itself (so bad requests get OpenAI-shaped 4xx errors
before touching the model), then hands a generation payload to the worker exactly the way
LitServe's streaming endpoint does: onto the request queue of the generation LitAPI, with a
response buffer entry that LitServe's response reader fills. Unlike LitServe's endpoint, we know
the request's uid, so a client that disconnects can be cancelled: we queue `{"cancel": uid}` and
the worker frees the slot. The worker answers a cancel message with its rows in use, which goes
to the metrics (the cancelled request's own last output has nobody left to read it).

This touches LitServe internals (`_get_request_queue`, `response_buffer`, `data_streamer`),
checked against litserve 0.2.19; keep them in this one module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pickle
import signal
import threading
import time
import uuid
from collections import deque
from typing import AsyncIterator

import litserve as ls
from litserve.utils import LitAPIStatus, ResponseBufferItem, WorkerSetupStatus

from litgpt_runtime.serve import metrics
from litgpt_runtime.serve.worker import GENERATE_PATH


class LitGPTServer(ls.LitServer):
    """LitServer plus a dict of cancelled request uids shared by all inference workers.

    Workers take requests from one shared queue, so a `{"cancel": uid}` message reaches only one
    of them; with several workers the cancellation is also recorded here, where the worker that
    runs the request finds it. Created in LitServe's own multiprocessing manager, before the
    workers are started (they receive the LitAPI, and with it the dict's proxy).
    """

    cancelled = None
    drain = None  # drain.Drain, set by cli.build_server

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        # Runs in the API process, inside uvicorn's signal capture: its SIGTERM handler is replaced
        # by one that leaves a signal to the whole process group to the main process (drain.py).
        uvicorns = signal.getsignal(signal.SIGTERM)
        if self.drain is not None and callable(uvicorns) and threading.current_thread() is threading.main_thread():
            from litgpt_runtime.serve.drain import main_process_decides

            signal.signal(signal.SIGTERM, main_process_decides(self.drain, uvicorns))
        async with super().lifespan(app):
            yield

    def _init_manager(self, num_api_servers: int):
        manager = super()._init_manager(num_api_servers)
        workers = sum(len(self._inference_workers_config_for_api(api.api_path)) for api in self.litapi_connector)
        if workers > 1:
            self.cancelled = manager.dict()
            for api in self.litapi_connector:
                api.cancelled = self.cancelled
        return manager


class _CancelAnswer:
    """Stands in for the response queue of a `{"cancel": uid}` message: reports the worker's rows
    in use to the metrics, and forgets the message when the worker has answered it."""

    def __init__(self, buffer: dict, uid: str) -> None:
        self.buffer, self.uid = buffer, uid

    def append(self, response) -> None:
        data, status = response
        if status == LitAPIStatus.OK:
            metrics.observe_rows(json.loads(data) if isinstance(data, str) else data)
        else:  # FINISH_STREAMING or ERROR: nothing more will come
            self.buffer.pop(self.uid, None)


class WorkerError(Exception):
    """The inference worker failed a request."""


class Bridge:
    def __init__(self, server) -> None:
        self.server = server  # litserve.LitServer; forked with the app into the API process

    def workers_ready(self) -> bool:
        """Every inference worker has loaded the model (what LitServe's /health reports)."""
        statuses = self.server.workers_setup_status
        return bool(statuses) and all(v == WorkerSetupStatus.READY for v in statuses.values())

    def _put(self, app, uid: str, payload: dict) -> None:
        request_queue = self.server._get_request_queue(GENERATE_PATH)
        request_queue.put((app.response_queue_id, uid, time.monotonic(), payload))

    async def generate(self, app, payload: dict) -> AsyncIterator[dict]:
        """Yield the worker's outputs ({"token", "finish", "batch"}) for one request.

        Closing the iterator early (client gone, stop string found) cancels the request.
        """
        uid = str(uuid.uuid4())
        event = asyncio.Event()
        outputs: deque = deque()
        self.server.response_buffer[uid] = ResponseBufferItem(event=event, response_queue=outputs)
        finished = False
        try:
            self._put(app, uid, payload)
            async for data, status in self.server.data_streamer(outputs, data_available=event, send_status=True):
                if status == LitAPIStatus.ERROR:
                    finished = True
                    error = pickle.loads(data) if isinstance(data, bytes) else data
                    raise WorkerError(str(error))
                output = json.loads(data) if isinstance(data, str) else data
                if output.get("finish") is not None:
                    finished = True
                yield output
                if finished:
                    return
        finally:
            self.server.response_buffer.pop(uid, None)
            if not finished:
                if self.server.cancelled is not None:
                    self.server.cancelled[uid] = time.time()
                cancel_uid = str(uuid.uuid4())
                self.server.response_buffer[cancel_uid] = ResponseBufferItem(
                    event=asyncio.Event(), response_queue=_CancelAnswer(self.server.response_buffer, cancel_uid))
                self._put(app, cancel_uid, {"cancel": uid})
