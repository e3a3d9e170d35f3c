"""`litgpt serve`: an OpenAI-compatible HTTP server on LitServe with batched decoding.

    cli.py        the action: validate options, build the LitServer, run it
    engine.py     BatchedGenerator: KV-cache slots, one forward for all active rows per step
    sampling.py   per-row greedy / temperature / top-k / top-p sampling of a batch of logits
    worker.py     the LitAPI + continuous-batching loop that drive the engine in LitServe's worker
    bridge.py     hands requests from our HTTP routes to LitServe's worker and streams results back
    routes.py     /v1/chat/completions, /v1/completions, /v1/models, /predict, /metrics
    schemas.py    request bodies (unknown fields rejected) and OpenAI-shaped errors
    metrics.py    Prometheus metrics
"""
