"""Fused interleaved token embedding of the Decision Transformer (Triton), forward and backward.

For each step t of each row, one kernel computes the three tokens
    R_t = W_r rtg_t + b_r + E[t],   s_t = W_s state_t + b_s + E[t],   a_t = W_a action_t + b_a + E[t],
normalises each with embed_ln (eps 1e-5), optionally adds GPT-2's wpe[0], and writes them interleaved as
(R_1, s_1, a_1, R_2, ...) into a (B, 3T, C) tensor: no (B, T, C) intermediates, no stack, one pass over memory.
The backward kernel recomputes the pre-norm tokens from the inputs (nothing but the inputs is saved), applies the
LayerNorm backward and writes the gradient of each pre-norm token; the weight and input gradients are then plain
GEMMs and one index_add, done by torch (cuBLAS) in the launcher.

Specification and CPU fallback: `dt_fast.kernels.reference.embed_ref`. Tests: tests/test_kernels_embed.py.
References: Liger-Kernel ops/layer_norm.py (launcher / autograd.Function layout), Triton tutorial 05 (LayerNorm
backward), CORL dt.py (the interleaving). All arithmetic is fp32 whatever the storage dtype; fp32 dots use
input_precision="ieee" so the GPU result stays within 1e-5 of the reference (TF32 would not).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dt_fast.kernels.reference import EMBED_LN_EPS

MAX_HIDDEN = 8192  # one program holds a (BLOCK_T, BLOCK_C) fp32 tile per token type
BLOCK_T = 16  # steps per program; tl.dot needs every tile dimension >= 16


@triton.jit
def _linear_tile(
    X,
    stride_x,
    W,
    stride_w,
    rows,
    row_ok,
    cols,
    col_ok,
    K,
    BLOCK_T: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """x[rows] @ W.T for a (BLOCK_T, BLOCK_C) tile; W is (C, K) row-major (nn.Linear layout); fp32."""
    acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)  # (BK,)
        k_ok = ks < K
        x = tl.load(X + rows[:, None] * stride_x + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(W + cols[None, :] * stride_w + ks[:, None], mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc += tl.dot(x.to(tl.float32), w.to(tl.float32), input_precision="ieee")  # (BT, BC)
    return acc


@triton.jit
def _pre_norm_tokens(
    STATES,
    ACTIONS,
    RTG,
    TIMESTEPS,
    W_R,
    B_R,
    W_S,
    B_S,
    W_A,
    B_A,
    TIME,
    stride_s,
    stride_a,
    stride_time,
    rows,
    row_ok,
    cols,
    col_ok,
    S,
    A,
    BLOCK_T: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_A: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """The three (BLOCK_T, BLOCK_C) fp32 tokens R, s, a of the steps `rows` before embed_ln; 0 outside C."""
    tile_ok = row_ok[:, None] & col_ok[None, :]
    t = tl.load(TIMESTEPS + rows, mask=row_ok, other=0).to(tl.int64)  # (BT,)
    time = tl.load(TIME + t[:, None] * stride_time + cols[None, :], mask=tile_ok, other=0.0).to(tl.float32)
    rtg = tl.load(RTG + rows, mask=row_ok, other=0.0).to(tl.float32)  # (BT,)
    w_r = tl.load(W_R + cols, mask=col_ok, other=0.0).to(tl.float32)  # (BC,): W_r is (C, 1)
    b_r = tl.load(B_R + cols, mask=col_ok, other=0.0).to(tl.float32)
    b_s = tl.load(B_S + cols, mask=col_ok, other=0.0).to(tl.float32)
    b_a = tl.load(B_A + cols, mask=col_ok, other=0.0).to(tl.float32)
    h_r = rtg[:, None] * w_r[None, :] + b_r[None, :] + time  # (BT, BC)
    h_s = (
        _linear_tile(STATES, stride_s, W_S, S, rows, row_ok, cols, col_ok, S, BLOCK_T, BLOCK_S, BLOCK_C)
        + b_s[None, :]
        + time
    )  # (BT, BC)
    h_a = (
        _linear_tile(ACTIONS, stride_a, W_A, A, rows, row_ok, cols, col_ok, A, BLOCK_T, BLOCK_A, BLOCK_C)
        + b_a[None, :]
        + time
    )  # (BT, BC)
    return h_r, h_s, h_a


@triton.jit
def _normalize(h, col_ok, C, eps):
    """(x_hat, rstd) of LayerNorm over the valid columns of a (BLOCK_T, BLOCK_C) fp32 tile."""
    mean = tl.sum(h, axis=1) / C  # (BT,)
    diff = tl.where(col_ok[None, :], h - mean[:, None], 0.0)  # (BT, BC)
    rstd = 1.0 / tl.sqrt(tl.sum(diff * diff, axis=1) / C + eps)  # (BT,)
    return diff * rstd[:, None], rstd


@triton.jit
def _embed_fwd_kernel(
    Y,
    STATES,
    ACTIONS,
    RTG,
    TIMESTEPS,
    W_R,
    B_R,
    W_S,
    B_S,
    W_A,
    B_A,
    TIME,
    LN_W,
    LN_B,
    WPE0,
    stride_s,
    stride_a,
    stride_time,
    N,
    S,
    A,
    C,
    eps,
    HAS_WPE: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_A: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Y[3n + j] = LayerNorm(token j of step n) (+ wpe0) for the BLOCK_T steps n of this program; Y is (3N, C)."""
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_T + tl.arange(0, BLOCK_T)  # (BT,) flat step index b * T + t
    row_ok = rows < N
    cols = tl.arange(0, BLOCK_C)  # (BC,)
    col_ok = cols < C
    tile_ok = row_ok[:, None] & col_ok[None, :]
    h_r, h_s, h_a = _pre_norm_tokens(
        STATES,
        ACTIONS,
        RTG,
        TIMESTEPS,
        W_R,
        B_R,
        W_S,
        B_S,
        W_A,
        B_A,
        TIME,
        stride_s,
        stride_a,
        stride_time,
        rows,
        row_ok,
        cols,
        col_ok,
        S,
        A,
        BLOCK_T,
        BLOCK_S,
        BLOCK_A,
        BLOCK_C,
    )
    g = tl.load(LN_W + cols, mask=col_ok, other=0.0).to(tl.float32)  # (BC,)
    beta = tl.load(LN_B + cols, mask=col_ok, other=0.0).to(tl.float32)
    if HAS_WPE:
        beta += tl.load(WPE0 + cols, mask=col_ok, other=0.0).to(tl.float32)
    out = Y + (3 * rows)[:, None] * C + cols[None, :]  # (BT, BC) pointers to the R_t rows
    x_hat, _ = _normalize(h_r, col_ok, C, eps)
    tl.store(out, (x_hat * g[None, :] + beta[None, :]).to(Y.dtype.element_ty), mask=tile_ok)
    x_hat, _ = _normalize(h_s, col_ok, C, eps)
    tl.store(out + C, (x_hat * g[None, :] + beta[None, :]).to(Y.dtype.element_ty), mask=tile_ok)
    x_hat, _ = _normalize(h_a, col_ok, C, eps)
    tl.store(out + 2 * C, (x_hat * g[None, :] + beta[None, :]).to(Y.dtype.element_ty), mask=tile_ok)


@triton.jit
def _layer_norm_bwd(DY, DH, h, g, offs, tile_ok, col_ok, C, eps):
    """Store dL/dh of one token tile given dL/dy; return the tile's (sum dy * x_hat, sum dy) over its rows."""
    x_hat, rstd = _normalize(h, col_ok, C, eps)
    dy = tl.load(DY + offs, mask=tile_ok, other=0.0).to(tl.float32)  # (BT, BC)
    wdy = dy * g[None, :]
    c1 = tl.sum(x_hat * wdy, axis=1) / C  # (BT,)
    c2 = tl.sum(wdy, axis=1) / C  # (BT,)
    dh = (wdy - (x_hat * c1[:, None] + c2[:, None])) * rstd[:, None]  # (BT, BC)
    tl.store(DH + offs, dh, mask=tile_ok)
    return tl.sum(dy * x_hat, axis=0), tl.sum(dy, axis=0)


@triton.jit
def _embed_bwd_kernel(
    DY,
    DH,
    DG_PART,
    DB_PART,
    STATES,
    ACTIONS,
    RTG,
    TIMESTEPS,
    W_R,
    B_R,
    W_S,
    B_S,
    W_A,
    B_A,
    TIME,
    LN_W,
    stride_s,
    stride_a,
    stride_time,
    N,
    S,
    A,
    C,
    eps,
    BLOCK_T: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_A: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """DH (3N, C) = dL/d(pre-norm token); DG_PART, DB_PART (programs, C) = this program's embed_ln grads."""
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_T + tl.arange(0, BLOCK_T)  # (BT,)
    row_ok = rows < N
    cols = tl.arange(0, BLOCK_C)  # (BC,)
    col_ok = cols < C
    tile_ok = row_ok[:, None] & col_ok[None, :]
    h_r, h_s, h_a = _pre_norm_tokens(
        STATES,
        ACTIONS,
        RTG,
        TIMESTEPS,
        W_R,
        B_R,
        W_S,
        B_S,
        W_A,
        B_A,
        TIME,
        stride_s,
        stride_a,
        stride_time,
        rows,
        row_ok,
        cols,
        col_ok,
        S,
        A,
        BLOCK_T,
        BLOCK_S,
        BLOCK_A,
        BLOCK_C,
    )
    g = tl.load(LN_W + cols, mask=col_ok, other=0.0).to(tl.float32)  # (BC,)
    offs = (3 * rows)[:, None] * C + cols[None, :]  # (BT, BC) offsets of the R_t rows
    dg_r, db_r = _layer_norm_bwd(DY, DH, h_r, g, offs, tile_ok, col_ok, C, eps)
    dg_s, db_s = _layer_norm_bwd(DY, DH, h_s, g, offs + C, tile_ok, col_ok, C, eps)
    dg_a, db_a = _layer_norm_bwd(DY, DH, h_a, g, offs + 2 * C, tile_ok, col_ok, C, eps)
    tl.store(DG_PART + pid * C + cols, dg_r + dg_s + dg_a, mask=col_ok)
    tl.store(DB_PART + pid * C + cols, db_r + db_s + db_a, mask=col_ok)


def _block(n: int) -> int:
    """Power-of-two tile size >= 16 (tl.dot's minimum) covering n, capped at 64 for reduction dims."""
    return max(16, min(64, triton.next_power_of_2(n)))


def _launch_settings(C: int) -> tuple[int, int]:
    """(BLOCK_C, num_warps) for hidden size C."""
    if C > MAX_HIDDEN:
        raise ValueError(f"fused embedding supports hidden_size <= {MAX_HIDDEN}, got {C}")
    block_c = max(16, triton.next_power_of_2(C))
    return block_c, 4 if block_c <= 256 else 8


def _rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """x as an (n, features) matrix whose last dimension has stride 1 (copies only when it must)."""
    x = x.reshape(n, -1)  # (N, F)
    return x if x.stride(-1) == 1 else x.contiguous()


def _check_inputs(
    states: torch.Tensor,
    actions: torch.Tensor,
    returns_to_go: torch.Tensor,
    timesteps: torch.Tensor,
    params: dict[str, torch.Tensor | None],
) -> None:
    """Raise ValueError naming the first argument of the fused embedding with a wrong shape, dtype or device."""
    if timesteps.dim() != 2 or timesteps.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"timesteps must be a (batch, steps) int32/int64 tensor, got shape "
            f"{tuple(timesteps.shape)} dtype {timesteps.dtype}"
        )
    B, T = timesteps.shape
    C = params["ln_weight"].shape[0]
    S, A = params["w_state"].shape[-1], params["w_action"].shape[-1]
    expected = {
        "states": (B, T, S),
        "actions": (B, T, A),
        "returns_to_go": (B, T, 1),
        "w_return": (C, 1),
        "b_return": (C,),
        "w_state": (C, S),
        "b_state": (C,),
        "w_action": (C, A),
        "b_action": (C,),
        "ln_weight": (C,),
        "ln_bias": (C,),
        "wpe0": (C,),
    }
    tensors = {"states": states, "actions": actions, "returns_to_go": returns_to_go, **params}
    dtype = params["ln_weight"].dtype
    for name, x in tensors.items():
        if x is None:
            continue
        want = (params["time_table"].shape[0], C) if name == "time_table" else expected[name]
        if tuple(x.shape) != want:
            raise ValueError(f"fused embedding: {name} must have shape {want}, got {tuple(x.shape)}")
        if x.dtype != dtype:
            raise ValueError(f"fused embedding: {name} has dtype {x.dtype}, expected {dtype} like the weights")
        if x.device != timesteps.device:
            raise ValueError(f"fused embedding: {name} is on {x.device}, timesteps on {timesteps.device}")
    if not dtype.is_floating_point:
        raise ValueError(f"fused embedding: weights must be floating point, got {dtype}")
    # The range check syncs with the device; a CUDA graph capture cannot sync and checks at its warm-up call.
    if timesteps.numel() and not (timesteps.is_cuda and torch.cuda.is_current_stream_capturing()):
        lo, hi = int(timesteps.min()), int(timesteps.max())
        if lo < 0 or hi >= params["time_table"].shape[0]:
            bad = int(((timesteps < 0) | (timesteps >= params["time_table"].shape[0])).flatten().nonzero()[0])
            raise ValueError(
                f"timesteps must lie in [0, {params['time_table'].shape[0]}), got "
                f"{int(timesteps.flatten()[bad])} at flat index {bad}"
            )


def embed_fwd(
    states: torch.Tensor,
    actions: torch.Tensor,
    returns_to_go: torch.Tensor,
    timesteps: torch.Tensor,
    w_return: torch.Tensor,
    b_return: torch.Tensor,
    w_state: torch.Tensor,
    b_state: torch.Tensor,
    w_action: torch.Tensor,
    b_action: torch.Tensor,
    time_table: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    wpe0: torch.Tensor | None = None,
    eps: float = EMBED_LN_EPS,
) -> torch.Tensor:
    """Launch the forward kernel; same arguments and result (B, 3T, C) as reference.embed_ref."""
    params = {
        "w_return": w_return,
        "b_return": b_return,
        "w_state": w_state,
        "b_state": b_state,
        "w_action": w_action,
        "b_action": b_action,
        "time_table": time_table,
        "ln_weight": ln_weight,
        "ln_bias": ln_bias,
        "wpe0": wpe0,
    }
    _check_inputs(states, actions, returns_to_go, timesteps, params)
    B, T = timesteps.shape
    N, C, S, A = B * T, ln_weight.shape[0], w_state.shape[1], w_action.shape[1]
    y = torch.empty(B, 3 * T, C, device=states.device, dtype=ln_weight.dtype)  # (B, 3T, C)
    if N == 0:
        return y
    s2, a2 = _rows(states, N), _rows(actions, N)  # (N, S), (N, A)
    block_c, num_warps = _launch_settings(C)
    w = [p.contiguous() for p in (w_return, b_return, w_state, b_state, w_action, b_action)]
    table = time_table if time_table.stride(-1) == 1 else time_table.contiguous()  # (max_ep_len, C)
    _embed_fwd_kernel[(triton.cdiv(N, BLOCK_T),)](
        y,
        s2,
        a2,
        returns_to_go.reshape(N).contiguous(),
        timesteps.reshape(N).contiguous(),
        *w,
        table,
        ln_weight.contiguous(),
        ln_bias.contiguous(),
        ln_bias if wpe0 is None else wpe0.contiguous(),
        s2.stride(0),
        a2.stride(0),
        table.stride(0),
        N,
        S,
        A,
        C,
        float(eps),
        HAS_WPE=wpe0 is not None,
        BLOCK_T=BLOCK_T,
        BLOCK_S=_block(S),
        BLOCK_A=_block(A),
        BLOCK_C=block_c,
        num_warps=num_warps,
    )
    return y


def embed_bwd(
    grad_y: torch.Tensor,
    states: torch.Tensor,
    actions: torch.Tensor,
    returns_to_go: torch.Tensor,
    timesteps: torch.Tensor,
    w_return: torch.Tensor,
    b_return: torch.Tensor,
    w_state: torch.Tensor,
    b_state: torch.Tensor,
    w_action: torch.Tensor,
    b_action: torch.Tensor,
    time_table: torch.Tensor,
    ln_weight: torch.Tensor,
    eps: float,
    needs: tuple[bool, ...],
) -> list[torch.Tensor | None]:
    """Gradients of embed_fwd w.r.t. (states, actions, rtg, w_r, b_r, w_s, b_s, w_a, b_a, table, ln_w, ln_b).

    `needs` gives for each of them whether it is wanted (None is returned otherwise). The wpe0 gradient, when
    wpe0 was used, equals the ln_bias gradient.
    """
    B, T = timesteps.shape
    N, C, S, A = B * T, ln_weight.shape[0], w_state.shape[1], w_action.shape[1]
    block_c, num_warps = _launch_settings(C)
    grid = triton.cdiv(N, BLOCK_T)
    dy = grad_y.reshape(3 * N, C).contiguous()  # (3N, C)
    dh = torch.empty(N, 3, C, device=grad_y.device, dtype=torch.float32)  # (N, 3, C) grad of pre-norm tokens
    dg_part = torch.zeros(max(grid, 1), C, device=grad_y.device, dtype=torch.float32)  # (programs, C)
    db_part = torch.zeros(max(grid, 1), C, device=grad_y.device, dtype=torch.float32)
    s2, a2 = _rows(states, N), _rows(actions, N)  # (N, S), (N, A)
    rtg = returns_to_go.reshape(N, 1).contiguous()  # (N, 1)
    table = time_table if time_table.stride(-1) == 1 else time_table.contiguous()
    if N:
        _embed_bwd_kernel[(grid,)](
            dy,
            dh,
            dg_part,
            db_part,
            s2,
            a2,
            rtg,
            timesteps.reshape(N).contiguous(),
            *[p.contiguous() for p in (w_return, b_return, w_state, b_state, w_action, b_action)],
            table,
            ln_weight.contiguous(),
            s2.stride(0),
            a2.stride(0),
            table.stride(0),
            N,
            S,
            A,
            C,
            float(eps),
            BLOCK_T=BLOCK_T,
            BLOCK_S=_block(S),
            BLOCK_A=_block(A),
            BLOCK_C=block_c,
            num_warps=num_warps,
        )
    dh_r, dh_s, dh_a = dh.unbind(1)  # 3 x (N, C)
    f32 = torch.float32
    grads = [
        (dh_s @ w_state.to(f32)).reshape(states.shape),  # d states (B, T, S)
        (dh_a @ w_action.to(f32)).reshape(actions.shape),  # d actions (B, T, A)
        (dh_r @ w_return.to(f32)).reshape(returns_to_go.shape),  # d returns_to_go (B, T, 1)
        dh_r.t() @ rtg.to(f32),  # d w_return (C, 1)
        dh_r.sum(0),  # d b_return (C,)
        dh_s.t() @ s2.to(f32),  # d w_state (C, S)
        dh_s.sum(0),  # d b_state (C,)
        dh_a.t() @ a2.to(f32),  # d w_action (C, A)
        dh_a.sum(0),  # d b_action (C,)
        torch.zeros(time_table.shape, device=dh.device, dtype=f32).index_add_(
            0, timesteps.reshape(N).long(), dh.sum(1)
        ),  # d time_table (max_ep_len, C)
        dg_part.sum(0),  # d ln_weight (C,)
        db_part.sum(0),  # d ln_bias (C,)
    ]
    like = (
        states,
        actions,
        returns_to_go,
        w_return,
        b_return,
        w_state,
        b_state,
        w_action,
        b_action,
        time_table,
        ln_weight,
        ln_weight,
    )
    return [g.to(x.dtype) if need else None for g, x, need in zip(grads, like, needs)]


class EmbedFunction(torch.autograd.Function):
    """Autograd wrapper of the fused embedding: forward = embed_fwd, backward = embed_bwd (fp32 accumulation).

    Saves only its inputs; the backward kernel recomputes the pre-norm tokens (3 small dots per step) instead of
    storing (B, 3T, C) activations. Gradients reach every weight and float input, and wpe0 when given.
    """

    @staticmethod
    def forward(
        ctx,
        states: torch.Tensor,
        actions: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        w_return: torch.Tensor,
        b_return: torch.Tensor,
        w_state: torch.Tensor,
        b_state: torch.Tensor,
        w_action: torch.Tensor,
        b_action: torch.Tensor,
        time_table: torch.Tensor,
        ln_weight: torch.Tensor,
        ln_bias: torch.Tensor,
        wpe0: torch.Tensor | None,
        eps: float,
    ) -> torch.Tensor:
        """(B, 3T, C) interleaved, normalised tokens."""
        y = embed_fwd(
            states,
            actions,
            returns_to_go,
            timesteps,
            w_return,
            b_return,
            w_state,
            b_state,
            w_action,
            b_action,
            time_table,
            ln_weight,
            ln_bias,
            wpe0,
            eps,
        )
        ctx.save_for_backward(
            states,
            actions,
            returns_to_go,
            timesteps,
            w_return,
            b_return,
            w_state,
            b_state,
            w_action,
            b_action,
            time_table,
            ln_weight,
        )
        ctx.eps, ctx.has_wpe = eps, wpe0 is not None
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """Gradients for every forward argument (None for timesteps and eps)."""
        (states, actions, rtg, timesteps, w_r, b_r, w_s, b_s, w_a, b_a, table, ln_w) = ctx.saved_tensors
        n = ctx.needs_input_grad
        needs = (n[0], n[1], n[2], *n[4:12], n[12] or n[13])
        g = embed_bwd(
            grad_y, states, actions, rtg, timesteps, w_r, b_r, w_s, b_s, w_a, b_a, table, ln_w, ctx.eps, needs
        )
        d_wpe0 = g[11] if ctx.has_wpe and n[13] else None
        d_ln_b = g[11] if n[12] else None
        return (*g[:3], None, *g[3:11], d_ln_b, d_wpe0, None)


def fused_embed(
    states: torch.Tensor,
    actions: torch.Tensor,
    returns_to_go: torch.Tensor,
    timesteps: torch.Tensor,
    w_return: torch.Tensor,
    b_return: torch.Tensor,
    w_state: torch.Tensor,
    b_state: torch.Tensor,
    w_action: torch.Tensor,
    b_action: torch.Tensor,
    time_table: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    wpe0: torch.Tensor | None = None,
    eps: float = EMBED_LN_EPS,
) -> torch.Tensor:
    """Differentiable fused embedding (B, 3T, C); arguments as reference.embed_ref."""
    return EmbedFunction.apply(
        states,
        actions,
        returns_to_go,
        timesteps,
        w_return,
        b_return,
        w_state,
        b_state,
        w_action,
        b_action,
        time_table,
        ln_weight,
        ln_bias,
        wpe0,
        eps,
    )
