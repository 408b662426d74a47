"""Triton kernels of dt_fast (fused embedding, masked attention over a KV ring) and their pure-torch references.

Importing this package never imports Triton: `dispatch` loads a kernel module only when it runs a kernel. Nothing
here imports from above dt_fast.kernels (tests/test_structure.py checks it).
"""

from dt_fast.kernels.dispatch import attention_masked, embed_tokens, embedding_weights, resolve_backend
from dt_fast.kernels.reference import attention_masked_ref, embed_ref

__all__ = [
    "attention_masked",
    "attention_masked_ref",
    "embed_ref",
    "embed_tokens",
    "embedding_weights",
    "resolve_backend",
]
