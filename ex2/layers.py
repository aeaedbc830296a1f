"""THE FILE YOU WRITE: the parts of exercise 2 that are yours, and what they need (torch only).

Each part to write is a stub (`# YOUR CODE HERE` over a bare NotImplementedError) inside a function marked
`@exercise(...)`; until you write it, whatever needs it stops with one line naming it (`Unimplemented: implement
...`). The parts, in the order the notebooks teach them:

- `RNNCell.update`, `GRUCell.update` (notebook 03, section 1): one step of each cell;
- `RNNCell.update_backward`, `GRUCell.update_backward`, `RecurrentBPTT.backward` (notebook 03, section 2):
  back-propagation through time by hand;
- `pool_token_scores` (notebook 04, section 1): the SUM and WEIGHTED logits from per-token outputs;
- `SelfAttention.forward` (notebook 04, section 2): restricted self-attention with its masks.

Each function's docstring states its shapes and every convention the code after it relies on (what a cache holds,
what a variable must be named, what padding gets); the grader checks exactly those. Everything else of the
exercise (data, models, training, checkpoints) reaches the notebooks through `helpers`, which imports this file;
this file imports nothing of the repository, so the grader can load it on its own.
"""
from __future__ import annotations

import math
from functools import wraps

import torch
from torch import nn

# --- what marks a part to write ---


class Unimplemented(NotImplementedError):
    """A part of the exercise that is still a stub (the student release): the message says what to write
    and where, and a notebook shows just that line, not a traceback."""

    def _render_traceback_(self):  # IPython's hook for how an exception is displayed: one line, in red
        return [f"{RED}{type(self).__name__}: {self}{PLAIN}"]


RED, PLAIN = "\x1b[31m", "\x1b[0m"
"""ANSI colours of the one-line errors in a notebook (JupyterLab renders them in a traceback)."""


def exercise(what: str, where: str):
    """Mark a function that holds a solution region (nbgrader's BEGIN / END SOLUTION comments), which the student
    release replaces with a stub: the stub's bare NotImplementedError becomes
    `Unimplemented("implement <what>: <where>")`, raised from the call that first needs it."""
    def wrap(fn):
        @wraps(fn)
        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Unimplemented:
                raise
            except NotImplementedError:
                raise Unimplemented(f"implement {what}: {where}") from None
        call.exercise = (what, where)
        return call
    return wrap


# --- shapes and masks ---


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Boolean mask (N, T): True at the real tokens of each review."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


# --- recurrent cells and back-propagation through time (notebook 03) ---


class RNNCell(nn.Module):
    """Elman cell written out: h' = tanh(W_ih x + b_ih + W_hh h + b_hh) (as torch.nn.RNNCell).
    `update` is its one forward formula and `update_backward` its derivative; the step, the training
    path (`run_cell` with hand-written BPTT) and `explain` all call them. Shown in notebook 03, section 1."""

    blocks = 1  # W_ih and W_hh hold one (H × ·) block per gate: 1 here, 3 (r, z, n) for the GRU

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.ih = nn.Linear(input_size, self.blocks * hidden_size)
        self.hh = nn.Linear(hidden_size, self.blocks * hidden_size)

    @staticmethod
    @exercise("RNNCell.update (h' = tanh(x_proj + gh))", "notebook 03, section 1")
    def update(x_proj: torch.Tensor, gh: torch.Tensor, h: torch.Tensor):
        """New state from the input projection x_proj = W_ih x + b_ih and gh = W_hh h + b_hh, each (B, H); returns
        (h', cache) with cache = h' itself (what `update_backward` reads: tanh' = 1 − h'²)."""
        ### BEGIN SOLUTION
        h_new = torch.tanh(x_proj + gh)
        return h_new, h_new
        ### END SOLUTION

    @staticmethod
    @exercise("RNNCell.update_backward (the derivative of tanh)", "notebook 03, section 2")
    def update_backward(dh_new: torch.Tensor, h: torch.Tensor, cache):
        """From δ = ∂L/∂h' (B, H) and `update`'s cache (h') to (∂L/∂x_proj, ∂L/∂gh, bypass), the first two (B, H).
        bypass is the part of ∂L/∂h that does not go through gh; the RNN has no such path, so return None, 0 or a
        zero tensor (all three are accepted; `RecurrentBPTT.backward` adds it to δ_{t-1})."""
        ### BEGIN SOLUTION
        h_new = cache
        d_pre = dh_new * (1 - h_new * h_new)  # tanh' = 1 − tanh²
        return d_pre, d_pre, 0.0
        ### END SOLUTION

    @torch.no_grad()
    def load_torch_weights(self, module: nn.Module) -> "RNNCell":
        """Copy the weights of torch's cell (nn.RNNCell / nn.GRUCell) or one-layer nn.RNN / nn.GRU into this cell
        (the same gate order: r, z, n), e.g. to check a hand-written step against torch's. Returns the cell."""
        suffix = "" if hasattr(module, "weight_ih") else "_l0"
        for mine, theirs in ((self.ih, "ih"), (self.hh, "hh")):
            weight, bias = getattr(module, f"weight_{theirs}{suffix}"), getattr(module, f"bias_{theirs}{suffix}")
            if weight.shape != mine.weight.shape:
                raise ValueError(f"{type(module).__name__}'s weight_{theirs} is {tuple(weight.shape)}, this "
                                 f"{type(self).__name__} needs {tuple(mine.weight.shape)}")
            mine.weight.copy_(weight)
            mine.bias.copy_(bias)
        return self

    def step(self, x_proj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step from a pre-computed input projection `ih(x)`."""
        return self.update(x_proj, self.hh(h), h)[0]

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.step(self.ih(x), h)


class GRUCell(RNNCell):
    """GRU cell written out, gates in torch.nn.GRUCell's order (r, z, n):

    r = σ(W_ir x + b_ir + W_hr h + b_hr),  z = σ(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),  h' = (1 − z) ⊙ n + z ⊙ h.
    Same interface as `RNNCell`, with three blocks in `ih` / `hh`. Shown in notebook 03, section 1."""

    blocks = 3

    @staticmethod
    @exercise("GRUCell.update (the r, z, n gates and h')", "notebook 03, section 1")
    def update(x_proj: torch.Tensor, gh: torch.Tensor, h: torch.Tensor):
        """x_proj = W_i x + b_i and gh = W_h h + b_h, each (B, 3H) in blocks r, z, n, and h (B, H); returns (h', cache)
        with cache = (r, z, n, gh_n), each (B, H): what `update_backward` reads (gh_n: the n block of gh)."""
        ### BEGIN SOLUTION
        H = h.shape[-1]
        rz = torch.sigmoid(x_proj[..., : 2 * H] + gh[..., : 2 * H])  # r and z in one call
        r, z = rz[..., :H], rz[..., H:]
        n = torch.tanh(torch.addcmul(x_proj[..., 2 * H:], r, gh[..., 2 * H:]))  # W_in x + b_in + r ⊙ gh_n
        h_new = torch.lerp(n, h, z)  # n + z ⊙ (h − n) = (1 − z) ⊙ n + z ⊙ h
        return h_new, (r, z, n, gh[..., 2 * H:])
        ### END SOLUTION

    @staticmethod
    def update_backward(dh_new: torch.Tensor, h: torch.Tensor, cache):
        """From δ = ∂L/∂h' and `update`'s cache (r, z, n, gh_n) to ∂L/∂(x_proj) and ∂L/∂gh, each (B, 3H) in blocks
        r, z, n, and the part of ∂L/∂h that bypasses gh (through z ⊙ h), (B, H). Given: the worked example that
        `RNNCell.update_backward` follows."""
        r, z, n, gh_n = cache
        da_n = dh_new * (1 - z) * (1 - n * n)          # through n = tanh(a_n)
        da_r = da_n * gh_n * r * (1 - r)               # a_n = ... + r ⊙ gh_n, r = σ(a_r)
        da_z = dh_new * (h - n) * z * (1 - z)          # h' = n + z ⊙ (h − n), z = σ(a_z)
        d_pre = torch.cat([da_r, da_z, da_n], dim=-1)  # ∂L/∂(W_i x + b_i), blocks r, z, n
        d_gh = torch.cat([da_r, da_z, da_n * r], dim=-1)  # ∂L/∂(W_h h + b_h): r scales gh_n
        return d_pre, d_gh, dh_new * z                 # z ⊙ h passes δ straight to h


class RecurrentBPTT(torch.autograd.Function):
    """Back-propagation through time written out by hand for RNNCell / GRUCell sequences.

    Autograd would record ~15 tiny operations per time step and replay them one by one; here the
    forward pass runs the cell's `update` and keeps what `update_backward` needs, and the backward pass
    applies the chain rule step by step, with the weight gradients summed over all steps in one
    matrix product at the end. Where `keep` is False (padding) the state is carried over unchanged.
    A test checks it against autograd. Shown in notebook 03, section 2."""

    @staticmethod
    def forward(ctx, cell: type, x_proj, w_hh, b_hh, h0, keep):
        h, caches, h_prev = h0, [], []
        for t in range(x_proj.shape[1]):
            h_new, cache = cell.update(x_proj[:, t], torch.addmm(b_hh, h, w_hh.t()), h)
            caches.append(cache)
            h_prev.append(h)
            h = torch.where(keep[:, t, None], h_new, h)
        ctx.cell, ctx.caches, ctx.h_prev = cell, caches, h_prev
        ctx.save_for_backward(w_hh, keep)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    @exercise("RecurrentBPTT.backward (the recurrence δ_t -> δ_{t-1})", "notebook 03, section 2")
    def backward(ctx, grad_h):
        """From δ_T = ∂L/∂h_T back to the first step: at each step t (the last first) the cell's `update_backward`
        gives ∂L/∂x_proj_t and ∂L/∂gh_t (gh_t = W_hh h_{t-1} + b_hh), and δ_{t-1} = ∂L/∂h_{t-1} collects every path
        from h_{t-1} to the loss; at padding (keep False) h_t = h_{t-1}, so δ passes unchanged.
        What the loop body must leave for the code after it: d_pre[t] = ∂L/∂x_proj_t and d_gh[t] = ∂L/∂gh_t, each
        (B, H) or (B, 3H) as `update_backward` returns them (zero at padding), and `dh` replaced by δ_{t-1} (B, H).
        It has: `dh` = δ_t, keep[:, t] (B,) True at real tokens, ctx.h_prev[t] = h_{t-1}, ctx.caches[t] = what
        `update` returned as its cache at step t, w_hh = W_hh ((H or 3H) × H) and ctx.cell."""
        w_hh, keep = ctx.saved_tensors
        T = keep.shape[1]
        dh = grad_h.contiguous()  # δ_T = ∂L/∂h_T
        d_pre, d_gh = [None] * T, [None] * T
        for t in reversed(range(T)):
            ### BEGIN SOLUTION
            m = keep[:, t, None].to(dh.dtype)
            d_pre[t], d_gh[t], direct = ctx.cell.update_backward(dh * m, ctx.h_prev[t], ctx.caches[t])
            dh = dh * (1 - m) + direct + d_gh[t] @ w_hh  # δ_{t-1}: skip (padding), direct path, through W_hh
            ### END SOLUTION
        d_gh_all = torch.stack(d_gh, dim=1).flatten(0, 1)
        h_prev_all = torch.stack(ctx.h_prev, dim=1).flatten(0, 1)
        return None, torch.stack(d_pre, dim=1), d_gh_all.t() @ h_prev_all, d_gh_all.sum(0), dh, None


def run_cell(cell: RNNCell, x: torch.Tensor, mask: torch.Tensor | None = None, h0: torch.Tensor | None = None,
             return_all: bool = False, manual_bptt: bool = True):
    """Unroll `cell` over x (B, T, D) from h0 (default 0). Where mask is False (padding) the state is carried
    over unchanged, so the final state is the one at each review's true last token.

    With `manual_bptt` (and only the final state asked for) the gradient comes from the
    hand-written back-propagation through time in `RecurrentBPTT`; otherwise autograd records
    `cell.step` at every time step. Both run `cell.update` and give the same numbers (a test)."""
    B, T, _ = x.shape
    h = x.new_zeros(B, cell.hidden_size) if h0 is None else h0
    x_proj = cell.ih(x)  # all input projections in one matrix product
    if mask is None:
        mask = torch.ones(B, T, dtype=torch.bool, device=x.device)
    if manual_bptt and not return_all:
        return RecurrentBPTT.apply(type(cell), x_proj, cell.hh.weight, cell.hh.bias, h, mask)
    states = []
    for t in range(T):
        h = torch.where(mask[:, t, None], cell.step(x_proj[:, t], h), h)
        states.append(h)
    return (h, torch.stack(states, dim=1)) if return_all else h


# --- token scores and self-attention (notebook 04) ---


@exercise("pool_token_scores (the SUM and WEIGHTED logits)", "notebook 04, section 1")
def pool_token_scores(out: torch.Tensor, mask: torch.Tensor, weighted: bool):
    """The review's logit from the token outputs (B, T, 1 or 2), channel 0 the sub-scores s and channel 1 (weighted
    only) the weight logits a: Σ s_i (sum) or Σ w_i s_i with w = softmax(a) over the real tokens (weighted); mask
    (B, T) is True at real tokens. Returns (logit (B,), s (B, T), w (B, T) for weighted, None for sum); padding gets
    s = w = 0, and a review with no real token all-zero w, with no NaN in the values or their gradients (a softmax
    over all −∞ is NaN). Shown in notebook 04, section 1."""
    ### BEGIN SOLUTION
    scores = out[..., 0].masked_fill(~mask, 0.0)
    if not weighted:
        return scores.sum(-1), scores, None
    weights = torch.softmax(out[..., 1].masked_fill(~mask, torch.finfo(out.dtype).min), dim=-1)
    weights = weights * mask  # an empty review gets all-zero weights, not NaN
    return (weights * scores).sum(-1), scores, weights
    ### END SOLUTION


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """The Transformer's sin/cos position code, (length, dim)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class PositionCode(nn.Module):
    """Adds the sinusoidal position code: x + P[:T] (the table grows for longer inputs)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("table", sinusoidal_positions(512, dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        if T > self.table.shape[0]:
            self.table = sinusoidal_positions(T, x.shape[2]).to(x)
        return x + self.table[:T]


class RelativePositions(nn.Module):
    """A learned code r_o for every offset o = j − i in [−k, k] (Shaw et al. 2018), added to the input of the
    neighbours' keys and values: key_ij = W_k (x_j + r_{j−i}) and value_ij = W_v (x_j + r_{j−i}). Because W_k and
    W_v are linear this is the plain key and value plus a term per offset:

        q_i · key_ij = q_i · k_j + q_i · (W_k r_{j−i}),     Σ_j A_ij value_ij = Σ_j A_ij v_j + Σ_j A_ij W_v r_{j−i}.

    `scores(q, key)` gives the second term of the first sum (B, T, T), `values(attn, value)` that of the second
    (B, T, d); offsets beyond ±k share the code of ±k (they are masked out by the window anyway)."""

    def __init__(self, dim: int, max_offset: int):
        super().__init__()
        self.max_offset = max_offset
        self.code = nn.Parameter(0.02 * torch.randn(2 * max_offset + 1, dim))

    def offsets(self, T: int, device) -> torch.Tensor:
        """(T, T) index of the code of offset j − i, clipped to [−k, k] and shifted to [0, 2k]."""
        pos = torch.arange(T, device=device)
        return (pos[None, :] - pos[:, None]).clamp(-self.max_offset, self.max_offset) + self.max_offset

    def scores(self, q: torch.Tensor, key: nn.Linear) -> torch.Tensor:
        index = self.offsets(q.shape[1], q.device)
        per_offset = q @ (self.code @ key.weight.T).T  # (B, T, 2k+1): q_i · W_k r_o
        return per_offset.gather(2, index.expand(q.shape[0], -1, -1))

    def values(self, attn: torch.Tensor, value: nn.Linear) -> torch.Tensor:
        index = self.offsets(attn.shape[1], attn.device).expand(attn.shape[0], -1, -1)
        per_offset = torch.zeros(*attn.shape[:2], self.code.shape[0], dtype=attn.dtype, device=attn.device)
        per_offset.scatter_add_(2, index, attn)  # (B, T, 2k+1): the attention each query gives each offset
        return per_offset @ (self.code @ value.weight.T)


RELATIVE_CLIP = 5
"""With full attention (window=None), relative positions learn a code for each offset in ±5 and share the code of ±5
beyond (the clipping of Shaw et al. 2018)."""


class SelfAttention(nn.Module):
    """Single-head scaled dot-product self-attention with learned Q/K/V, restricted to a window:

    A = softmax((Q Kᵀ + R) / √d + M),  Q = (x + P) W_q,  K = (x + P) W_k,  V = x W_v,  out = [x +] A V [+ A_r].

    P is the sinusoidal position code of absolute positions (`positions=True`; so "not good" differs from "good
    not"). With `relative=True` the layer learns a code per offset j − i instead (`RelativePositions`): R_ij is its
    term in the scores and A_r its term in the values; otherwise R = 0.
    M is −∞ (or the dtype's most negative number) at padding keys and, with `window=k`, outside |i − j| ≤ k (the
    exercise's restricted attention); window=None is full attention. `residual` adds the input back. x is (B, T, d),
    mask (B, T) True at real tokens; returns (out (B, T, d), A (B, T, T)). The rows of padding *queries* reach no
    output (padding positions are dropped before the logit): a zero row, or the softmax over the row's real keys,
    are both right there, and here they are zero.
    Shown in notebook 04, section 2, with a worked example."""

    def __init__(self, dim: int, window: int | None = 5, residual: bool = True, positions: bool = True,
                 relative: bool = False):
        super().__init__()
        if window is not None and window < 0:
            raise ValueError(f"window must be None or >= 0, got {window}")
        self.window, self.residual = window, residual
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.positions = PositionCode(dim) if positions else None
        # a code per offset in the window (full attention: offsets beyond ±RELATIVE_CLIP share the code of ±that);
        # window 0 (A = I, the same-capacity control of the ±5 model) keeps the ±RELATIVE_CLIP codes, unused but for
        # offset 0, so that it has the ±5 model's parameters and, seed for seed, its initial weights
        codes = RELATIVE_CLIP if window is None or window == 0 else window
        self.relative = RelativePositions(dim, codes) if relative else None

    @exercise("SelfAttention.forward (scores, the padding and window mask, softmax)", "notebook 04, section 2")
    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        """x (B, T, d), mask (B, T) True at real tokens; returns (out (B, T, d), A (B, T, T)). What the part to write
        must leave for the code after it: the attention matrix A in a variable named `attn` (B, T, T), each real
        query's row a softmax over the real keys in its window; it has q, k, v (B, T, d) and `rel` (R, or 0)."""
        T = x.shape[1]
        xp = x if self.positions is None else self.positions(x)
        q, k, v = self.q(xp), self.k(xp), self.v(x)
        rel = 0.0 if self.relative is None else self.relative.scores(q, self.k)  # R: (B, T, T), or 0
        ### BEGIN SOLUTION
        scores = (q @ k.transpose(1, 2) + rel) / math.sqrt(x.shape[-1])
        allowed = mask[:, None, :] & mask[:, :, None]  # real queries attend to real keys only
        if self.window is not None:
            offsets = torch.arange(T, device=x.device)
            allowed = allowed & ((offsets[:, None] - offsets[None, :]).abs() <= self.window)
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        attn = torch.softmax(scores, dim=-1) * allowed  # rows of padding queries become all zero
        ### END SOLUTION
        out = attn @ v
        if self.relative is not None:
            out = out + self.relative.values(attn, self.v)
        return (x + out if self.residual else out), attn
