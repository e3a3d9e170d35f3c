"""Kubernetes operator for LitGPT workflows (LitGPTModel, FinetuneJob, PretrainJob, ModelServer)."""

__version__ = "0.1.0"
