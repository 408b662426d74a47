"""The Triton kernels the product runs (the fused embedding, forward and backward; the decoder's masked attention)
compile for a real CUDA target (sm_80; with DT_FAST_FULL_GRID=1 also sm_75, sm_90 and bf16) without a GPU.

The interpreter tests check the arithmetic; this checks what the interpreter cannot: that each kernel variant
lowers through Triton's GPU compiler and the ptxas bundled with Triton, with tile shapes legal for tl.dot, and
fits in 48 KB of shared memory (every CUDA GPU's default limit). It runs this file as a script in a fresh
process, because TRITON_INTERPRET=1 (set by the other kernel tests) turns @triton.jit into the interpreter.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest

SHARED_LIMIT = 48 * 1024
FULL_GRID = os.environ.get("DT_FAST_FULL_GRID") == "1"
TARGETS = (75, 80, 90) if FULL_GRID else (80,)  # each compile takes seconds: Ampere by default
DTYPES = ("fp32", "bf16") if FULL_GRID else ("fp32",)


def compile_all() -> list[str]:
    """Compile every kernel variant the launchers can request for each target; one report line per kernel."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    import dt_fast.kernels.attention as attention
    import dt_fast.kernels.embed as embed

    def arg_type(name: str, dtype: str) -> str:
        if name == "TIMESTEPS":
            return "*i64"
        if name == "MASK":
            return "*u8"  # attention_masked_fwd passes the bool mask as uint8
        if name in ("eps", "scale"):
            return "fp32"
        if name.isupper() and name not in ("N", "S", "A", "C", "NQ", "NK", "HS"):
            return f"*{dtype}"
        return "i32"  # sizes and strides

    variants = []  # (kernel, dtype, constexprs, num_stages), with the tiles the launchers choose
    for dtype in DTYPES:
        block_c, _ = embed._launch_settings(128)
        tiles = dict(BLOCK_T=embed.BLOCK_T, BLOCK_S=embed._block(17), BLOCK_A=embed._block(6), BLOCK_C=block_c)
        variants.append((embed._embed_fwd_kernel, dtype, dict(HAS_WPE=True, **tiles), 3))
        variants.append((embed._embed_bwd_kernel, dtype, tiles, 3))
        # The decoder's attention: 3 new tokens (rolling, exact while the window fills) or the 3K - 1 = 59 tokens
        # of an exact recompute (K = 20), head_dim 128 (1 head of the blog's model) and 64 (2 heads).
        for n_queries, head_dim in ((3, 128), (59, 128), (3, 64), (59, 64)):
            block_q, block_d = attention.launch_blocks(n_queries, head_dim)
            variants.append(
                (
                    attention._attn_masked_fwd_kernel,
                    dtype,
                    dict(BLOCK_Q=block_q, BLOCK_N=attention.BLOCK_N, BLOCK_D=block_d),
                    attention.NUM_STAGES,
                )
            )
    report = []
    for cap in TARGETS:
        for kernel, dtype, constexprs, stages in variants:
            names = list(inspect.signature(kernel.fn).parameters)
            signature = {n: "constexpr" if n in constexprs else arg_type(n, dtype) for n in names}
            source = ASTSource(kernel, signature, constexprs={(names.index(n),): v for n, v in constexprs.items()})
            shared = compile(source, target=GPUTarget("cuda", cap, 32), options=dict(num_stages=stages)).metadata.shared
            report.append(f"sm_{cap} {kernel.fn.__name__} {dtype} {constexprs} shared={shared}")
            assert shared <= SHARED_LIMIT, f"{report[-1]}: more than {SHARED_LIMIT} bytes of shared memory"
    return report


def test_kernels_compile_for_cuda_targets() -> None:
    pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be compiled")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    done = subprocess.run(
        [sys.executable, __file__],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert done.returncode == 0, f"kernel compilation failed:\n{done.stdout}\n{done.stderr[-4000:]}"


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    print("\n".join(compile_all()))
