"""LitGPT-style LLM workflows: download, chat, generate, finetune, pretrain, serve.

Heavy modules (torch, lightning) are imported inside the action functions so that
`litgpt --help` stays instant.
"""

__version__ = "0.1.0"
