"""`litgpt serve`: validate the options, build the LitServer, run it until SIGTERM/Ctrl-C."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Literal, Optional

from litgpt_runtime.errors import UserError
from litgpt_runtime.quantize import Quantize  # torch-free

_HOSTS = ("127.0.0.1", "0.0.0.0", "::")


def main(
    repo_id: str,
    *,
    checkpoint_root_dir: Path = Path("checkpoints"),
    host: str = "127.0.0.1",
    port: int = 8000,
    accelerator: Literal["auto", "cpu", "cuda", "mps"] = "auto",
    devices: int = 1,
    workers_per_device: int = 1,
    max_batch_size: int = 8,
    max_waiting: Optional[int] = None,
    max_new_tokens: int = 50,
    temperature: float = 0.8,
    top_k: Optional[int] = 50,
    top_p: float = 1.0,
    max_seq_length: Optional[int] = 2048,
    precision: Optional[str] = None,
    quantize: Quantize = None,
    model_name: Optional[str] = None,
    adapters: Optional[str] = None,
    access_token: Optional[str] = None,
    api_key: Optional[str] = None,
    drain_timeout: float = 30.0,
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info",
) -> None:
    """Serve a model over HTTP: OpenAI-compatible API, /predict, /health and Prometheus /metrics.

    Routes: POST /v1/chat/completions and /v1/completions (both with "stream": true), GET
    /v1/models, POST /predict ({"prompt": "..."} -> {"output": "..."}), GET /health (200 once the
    model is loaded), GET /ready (200 once it answers a 1-token generation), GET /metrics.
    Concurrent requests are decoded together, up to --max_batch_size per device. On SIGTERM it
    finishes the requests in progress (see --drain_timeout), then stops; Ctrl-C stops at once.

    Args:
        repo_id: Hugging Face repo id (resolved under --checkpoint_root_dir; downloaded on first
            use) or the path of any complete checkpoint folder (e.g. a finetuned or merged one).
        checkpoint_root_dir: Where repo ids are looked up and downloaded to.
        host: Address to listen on: 127.0.0.1 (this machine only), 0.0.0.0 or :: (all interfaces).
        port: TCP port (1024-65535).
        accelerator: auto (GPU when available), cpu, cuda or mps.
        devices: How many devices to serve on; each loads the model and batches on its own.
        workers_per_device: Inference workers per device (each with its own model copy and batch).
        max_batch_size: How many requests a device decodes together (the KV cache has one row each).
        max_waiting: How many more requests may wait for a free row; past that the server answers 503
            with Retry-After. None = 4 x the rows of all workers.
        max_new_tokens: Default completion length when a request gives no max_tokens.
        temperature: Default sampling temperature (0 = greedy); requests may override it.
        top_k: Default top-k (None = off); requests may override it.
        top_p: Default top-p; requests may override it.
        max_seq_length: Context per request (prompt + completion) the KV cache is sized for; at
            most the model's block size. None = the block size.
        precision: 32-true, bf16-true or 16-true (default: bf16 on GPUs, 32-true on CPU).
        quantize: Load the base weights quantized with bitsandbytes (bnb.nf4, bnb.nf4-dq, bnb.fp4,
            bnb.fp4-dq, bnb.int8), as generate and chat do: less memory, a little less accuracy.
        model_name: The name clients put in "model" (default: the repo id).
        adapters: LoRA finetunes of this model to serve beside it, on one copy of the base weights:
            name=path[,name=path...], each path the final/ folder of `litgpt finetune_lora --merge
            false`. Clients pick one with "model": name; /v1/models lists them all.
        access_token: Hugging Face token for gated models (default: $HF_TOKEN).
        api_key: Require `Authorization: Bearer <key>` on every route but /health, /ready and
            /metrics (default: $LITGPT_API_KEY; unset = no key). Prefer the variable: an option is
            visible to anyone who can list the machine's processes.
        drain_timeout: On SIGTERM, how many seconds the requests in progress (and any still
            arriving) may take to finish before the server stops; /ready answers 503 meanwhile.
            A second SIGTERM stops at once.
        log_level: Server log level.
    """
    from litgpt_runtime.config import Config
    from litgpt_runtime.download import ensure_checkpoint
    from litgpt_runtime.precision import check_inference_precision
    from litgpt_runtime.tokenizer import Tokenizer

    if host not in _HOSTS:
        raise UserError(f"--host {host!r} is not supported; use 127.0.0.1 (local only), 0.0.0.0 or ::.")
    if not 1024 <= port <= 65535:
        raise UserError(f"--port {port} is out of range; choose a port from 1024 to 65535.")
    if min(max_batch_size, devices, workers_per_device, max_new_tokens) < 1:
        raise UserError("--max_batch_size, --devices, --workers_per_device and --max_new_tokens must be at least 1.")
    if max_waiting is not None and max_waiting < 0:
        raise UserError(f"--max_waiting must be 0 or more (got {max_waiting}).")
    if drain_timeout < 0:
        raise UserError(f"--drain_timeout must be 0 or more seconds (got {drain_timeout:g}).")
    if temperature < 0 or not 0 < top_p <= 1 or (top_k is not None and top_k < 1):
        raise UserError("Use --temperature >= 0, 0 < --top_p <= 1 and --top_k >= 1 (or None).")
    check_inference_precision(precision)
    if quantize is not None:
        from litgpt_runtime.quantize import check_quantize

        check_quantize(quantize)  # a bad mode or a bitsandbytes that cannot run here: before the server starts
        if adapters:
            raise UserError("--adapters does not combine with --quantize yet: serve the adapters over full-precision "
                            "base weights, or merged finetunes (--merge true) quantized one per server.")

    from litgpt_runtime.serve.auth import ENV_VAR

    api_key = api_key if api_key is not None else os.environ.get(ENV_VAR)
    if api_key is not None and not api_key.strip():
        raise UserError(f"The API key (--api_key or ${ENV_VAR}) is empty; set a key, or unset it to serve without one.")

    from litgpt_runtime.serve.adapters import parse_adapters

    adapter_dirs = parse_adapters(adapters, {model_name or repo_id, repo_id})
    checkpoint_dir = ensure_checkpoint(repo_id, checkpoint_root_dir, access_token=access_token)
    config = Config.from_checkpoint(checkpoint_dir)
    if max_seq_length is None or max_seq_length > config.block_size:
        max_seq_length = config.block_size
    if max_seq_length < 2:
        raise UserError("--max_seq_length must be at least 2.")
    if adapter_dirs:  # fail here, with the reason, rather than in the worker after the server started
        check_adapters(config, adapter_dirs, checkpoint_dir)
    _check_accelerator(accelerator, devices)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the API process is forked after use
    tokenizer = Tokenizer(checkpoint_dir)
    server = build_server(checkpoint_dir, tokenizer, served_name=model_name or repo_id, aliases={repo_id},
                          accelerator=accelerator, devices=devices, workers_per_device=workers_per_device,
                          max_batch_size=max_batch_size, max_waiting=max_waiting,
                          max_seq_length=max_seq_length, precision=precision, max_new_tokens=max_new_tokens,
                          temperature=temperature, top_k=top_k, top_p=top_p, api_key=api_key,
                          adapters=adapter_dirs, quantize=quantize)

    # Kubernetes stops pods with SIGTERM: finish what is in progress, then let LitServe shut its
    # API and inference processes down (drain.py).
    from litgpt_runtime.serve.drain import install_sigterm

    install_sigterm(server.drain, drain_timeout, stop=lambda: _stop(server))
    server.uvicorn_graceful_timeout = max(drain_timeout, 1.0)
    print(f"Serving {model_name or repo_id} from {checkpoint_dir} on http://{host}:{port} "
          f"(OpenAI API under /v1, max_batch_size={max_batch_size}, context {max_seq_length - 1} tokens"
          f"{', API key required' if api_key else ''}"
          f"{f', base weights quantized with {quantize}' if quantize else ''})", flush=True)
    server.run(host=host, port=port, num_api_servers=1, log_level=log_level, generate_client_file=False)


def _stop(server) -> None:
    """LitServe's own shutdown (API process, workers, manager); before it has started, Ctrl-C's."""
    if server._shutdown_event is not None:
        server._shutdown_event.set()
    else:
        os.kill(os.getpid(), signal.SIGINT)


def _check_accelerator(accelerator: str, devices: int) -> None:
    import torch

    if accelerator == "cuda" and not torch.cuda.is_available():
        raise UserError("--accelerator cuda was asked for, but no CUDA GPU is available; use auto or cpu.")
    if accelerator in ("cuda", "auto") and torch.cuda.is_available() and devices > torch.cuda.device_count():
        raise UserError(f"--devices {devices} asked for, but only {torch.cuda.device_count()} GPUs are visible.")
    if accelerator == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--accelerator mps was asked for, but MPS is not available; use auto or cpu.")


def check_adapters(config, adapter_dirs: dict[str, Path], checkpoint_dir: Path) -> None:
    """Attach the adapters to a weightless (meta) copy of the model: every file, key and shape is
    checked, and nothing is computed."""
    import torch

    from litgpt_runtime.model import GPT
    from litgpt_runtime.serve.adapters import attach_adapters

    with torch.device("meta"):
        model = GPT(config)
    attach_adapters(model, list(adapter_dirs.items()), checkpoint_dir)


def build_server(checkpoint_dir: Path, tokenizer, *, served_name: str, aliases: set[str], accelerator: str,
                 devices: int, workers_per_device: int, max_batch_size: int, max_seq_length: int, precision: Optional[str],
                 max_new_tokens: int, temperature: float, top_k: Optional[int], top_p: float,
                 max_waiting: Optional[int] = None, api_key: Optional[str] = None,
                 adapters: Optional[dict[str, Path]] = None, quantize: Optional[str] = None):
    """The LitServer with our generation LitAPI and routes (not started)."""
    from litgpt_runtime.serve import metrics
    from litgpt_runtime.serve.auth import APIKeyMiddleware
    from litgpt_runtime.serve.bridge import Bridge, LitGPTServer
    from litgpt_runtime.serve.drain import Drain
    from litgpt_runtime.serve.intake import Admission
    from litgpt_runtime.serve.metrics import MetricsMiddleware
    from litgpt_runtime.serve.routes import Defaults, ServeState, ServedModel, add_routes
    from litgpt_runtime.serve.worker import GENERATE_PATH, GenerationAPI

    from litgpt_runtime.tokenizer import Tokenizer

    adapters = adapters or {}
    drain = Drain()
    api = GenerationAPI(checkpoint_dir, max_batch_size=max_batch_size, max_seq_length=max_seq_length,
                        precision=precision, adapters=tuple(adapters.items()), quantize=quantize, drain=drain)
    server = LitGPTServer(api, accelerator=accelerator, devices=devices, workers_per_device=workers_per_device,
                          timeout=False,
                          # the last is outermost: the metrics count refused requests too
                          middlewares=[*([(APIKeyMiddleware, {"key": api_key})] if api_key else []), MetricsMiddleware],
                          model_metadata={"model": served_name})
    # Our routes hand requests to the worker themselves (bridge.py); LitServe's raw endpoint for
    # the generation API would accept unvalidated payloads, so it is not exposed.
    server.app.router.routes = [r for r in server.app.router.routes if getattr(r, "path", None) != GENERATE_PATH]
    server.uvicorn_graceful_timeout = 10
    rows = max_batch_size * devices * workers_per_device
    base = ServedModel(served_name, 0, tokenizer)
    state = ServeState(
        model_name=served_name,
        models={**{name: base for name in {served_name, *aliases}},
                **{name: ServedModel(name, i, Tokenizer(folder)) for i, (name, folder) in enumerate(adapters.items(), 1)}},
        context_window=max_seq_length - 1,
        defaults=Defaults(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p),
        bridge=Bridge(server),
        admission=Admission(rows + (4 * rows if max_waiting is None else max_waiting), drain=drain),
    )
    server.drain = drain
    metrics.KV_ROWS.set(max_batch_size)
    add_routes(server.app, state)
    return server
