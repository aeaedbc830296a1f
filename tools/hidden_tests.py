"""The grader's hidden tests: for each question, the inputs the submission's code is run on and the check of what it
returns. They stay with the reference: `tools/make_assignment.py` never copies this file into the student release.

Every test is a `case_<question>(gen, ref, source)` that returns `(request, check)`:
- `request`: what the sandboxed child (tools/harness.py) runs: the submission's functions (or the notebook cell's
  `source`, read by the grader from the submitted .ipynb) called on inputs drawn here from `gen` (seeded per
  submission). It carries no expected value.
- `check(values)`: compares the values the child sent back (already decoded to plain NumPy arrays) with the ones
  computed here, by the reference (`ref`, the reference `helpers`) or by torch and autograd; it raises
  AssertionError with a message meant for the student.

Where a part builds on another (BPTT on the cell's forward pass, the committed GRU on the cell), the child gets the
reference's values as data (the caches, the weights), so one mistake costs one question. Each test checks only what
the release states (the stub's docstring or the notebook cell): e.g. the rows of padding queries in attention are
free, and the RNN's bypass gradient may be None, 0 or zeros.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tools.questions import QUESTIONS

ROOT = Path(__file__).resolve().parent.parent
SIZES = [(1, 1), (3, 2), (5, 7)]  # (input size, hidden size): the notebooks' checks use others


@functools.lru_cache(maxsize=16)
def graded_cells(notebook: Path) -> dict[str, str]:
    """{grade_id: source} of a notebook's nbgrader cells, read once per process (as data: nothing runs)."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    return {c["metadata"]["nbgrader"]["grade_id"]: "".join(c.get("source", "")) for c in cells
            if "grade_id" in c.get("metadata", {}).get("nbgrader", {})}


@functools.lru_cache(maxsize=1)
def manual_questions() -> dict:
    """Written answers, from the reference notebooks' metadata (markdown cells that are nbgrader solution + grade
    cells): grade_id -> points, notebook, and a title from the heading above the cell. The grader lists them as
    graded by hand, with the reference answer in the instructor's report only."""
    found = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        heading = ""
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            text = "".join(cell["source"])
            if cell["cell_type"] != "markdown":
                continue
            if meta.get("solution") and meta.get("grade"):
                found[meta["grade_id"]] = {"points": meta["points"], "notebook": f"notebooks/{path.name}",
                                           "title": f"notebook {path.name[:2]}, {heading}"}
            else:
                heading = next((line.lstrip("#").strip() for line in reversed(text.splitlines())
                                if line.startswith("#")), heading)
    return found


# --- comparing what came back ---

def _tensor(what: str, value) -> torch.Tensor:
    """A returned value as the grader's own float64 tensor (arrays only: decode never gives anything else)."""
    if isinstance(value, torch.Tensor):  # already converted here
        return value.detach().double()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.double)
    if not isinstance(value, np.ndarray):
        raise AssertionError(f"{what}: expected a tensor, got {_kind(value)}")
    return torch.from_numpy(np.array(value, dtype=np.float64, copy=True))


def _kind(value) -> str:
    return "None" if value is None else "a list" if isinstance(value, list) else type(value).__name__


def _close(what: str, got, want: torch.Tensor, tol: float = 1e-9) -> None:
    got = _tensor(what, got)
    want = want.detach().double()
    if tuple(got.shape) != tuple(want.shape):
        raise AssertionError(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    if not torch.isfinite(got).all():
        raise AssertionError(f"{what}: has NaN or inf")
    err = (got - want).abs().max().item() if got.numel() else 0.0
    if not err <= tol:
        raise AssertionError(f"{what}: differs from the reference by {err:.3g} (tolerance {tol:g})")


def _items(what: str, value, n: int) -> list:
    if not isinstance(value, list) or len(value) != n:
        raise AssertionError(f"{what}: return {n} values (a tuple), got {_kind(value)}"
                             + (f" of {len(value)}" if isinstance(value, list) else ""))
    return value


def _rand(gen: torch.Generator, *shape, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=gen, dtype=torch.double)


def _helpers_request(question: str, calls: list[dict]) -> dict:
    return {"id": question, "kind": "helpers", "calls": calls}


def _call(target: str, *args, dtype: str = "float64") -> dict:
    return {"op": "call", "target": target, "args": list(args), "dtype": dtype}


# --- ex2/layers.py: the recurrent cells ---

def _torch_cell(kind: str, d_in: int, hidden: int, gen: torch.Generator):
    cell = (torch.nn.GRUCell if kind == "gru" else torch.nn.RNNCell)(d_in, hidden).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(_rand(gen, *p.shape, scale=0.5))
    return cell


def _steps(kind: str, gen: torch.Generator):
    """Single steps of random cells: update's inputs (x_proj, gh, h) and torch.nn's new state."""
    name = "GRUCell" if kind == "gru" else "RNNCell"
    calls, wants = [], []
    for d_in, hidden in SIZES:
        cell = _torch_cell(kind, d_in, hidden, gen)
        for batch in (1, 4):
            x, h = _rand(gen, batch, d_in), _rand(gen, batch, hidden)
            x_proj, gh = F.linear(x, cell.weight_ih, cell.bias_ih), F.linear(h, cell.weight_hh, cell.bias_hh)
            calls.append(_call(f"{name}.update", x_proj, gh, h))
            wants.append((f"{name}.update's h' (input {d_in}, hidden {hidden}, batch {batch}) against torch.nn.{name}",
                          cell(x, h)))
        # a padded batch unrolled with the student's update (the harness's loop) against torch.nn's cell
        vocab, lengths = 9, torch.tensor([6, 2, 1])
        table, ids = _rand(gen, vocab, d_in), torch.randint(1, vocab, (3, 6), generator=gen)
        calls.append({"op": "unroll", "cell": name, "dtype": "float64",
                      "args": [table, ids, lengths, cell.weight_ih, cell.bias_ih, cell.weight_hh, cell.bias_hh]})
        finals = []
        for b, n in enumerate(lengths.tolist()):
            state = torch.zeros(1, hidden, dtype=torch.double)
            for t in range(n):
                state = cell(table[ids[b, t]][None], state)
            finals.append(state)
        wants.append((f"{name}.update over a padded batch (lengths 6, 2, 1; input {d_in}, hidden {hidden}): the "
                      f"states at each review's last token", torch.cat(finals)))
    return calls, wants


def _check_steps(wants):
    def check(values):
        for (what, want), got in zip(wants, _items("the cell", values, len(wants))):
            if isinstance(got, list):  # update returns (h', cache)
                got = _items(what, got, 2)[0]
            _close(what, got, want)
    return check


def case_rnn_cell(gen, ref, source=None):
    calls, wants = _steps("rnn", gen)
    return _helpers_request("rnn_cell", calls), _check_steps(wants)


def case_gru_cell(gen, ref, source=None):
    calls, wants = _steps("gru", gen)
    checkpoint = _checkpoint_case(ref)
    if checkpoint is not None:
        calls.append(checkpoint[0])
    check_steps = _check_steps(wants)

    def check(values):
        values = _items("the GRU cell", values, len(calls))
        check_steps(values[:len(wants)])
        if checkpoint is not None:
            checkpoint[1](values[-1])
    return _helpers_request("gru_cell", calls), check


@functools.lru_cache(maxsize=2)
def _checkpoint_case(ref):
    """The committed GRU checkpoint run through the student's GRUCell.update: the child gets the checkpoint's
    (public) weights and the reviews' word vectors, sends back the final states; the grader applies the output
    layer, and compares P(positive) and accuracy with the reference model's."""
    path = ROOT / "checkpoints" / "gru.pt"
    if not path.is_file():
        return None
    model = ref.load_checkpoint(path).cpu()
    texts = list(ref.WRITEUP_REVIEWS) + ["a dull, predictable plot and wooden acting", "one of the best films this year"]
    ids, lengths, _ = ref.encode(texts, model.info.max_len, model.info.tokenizer)
    labels, what = None, "P(positive) of four reviews"
    try:
        ids, lengths, labels = _test_subset(ref, model.info)
        what = f"P(positive) of {len(labels)} test reviews"
    except ref.ImdbError:
        pass  # no IMDB here: the four reviews are the check
    width = max(int(lengths.max()), 1)
    ids = ids[:, :width]
    with torch.no_grad():
        want = torch.sigmoid(model(ids, lengths)).double()
        used, compact = torch.unique(ids, return_inverse=True)
        table = model.embed(used)
    cell = model.cell
    request = {"op": "unroll", "cell": "GRUCell", "dtype": "float32",
               "args": [table, compact, lengths, cell.ih.weight, cell.ih.bias, cell.hh.weight, cell.hh.bias]}

    def check(states):
        states = _tensor("the committed GRU's final states", states).float()
        if tuple(states.shape) != (len(lengths), cell.hidden_size):
            raise AssertionError(f"the committed GRU checkpoint through your GRUCell: final states of shape "
                                 f"{tuple(states.shape)}, expected {(len(lengths), cell.hidden_size)}")
        with torch.no_grad():
            got = torch.sigmoid(model.out(states).squeeze(-1)).double()
        _close(f"the committed GRU checkpoint through your GRUCell: {what}", got, want, 1e-4)
        if labels is not None:
            acc = lambda p: ((p > 0.5).long() == labels).double().mean().item()  # noqa: E731
            if acc(got) != acc(want):
                raise AssertionError(f"the committed GRU checkpoint through your GRUCell: test accuracy {acc(got):.4f}"
                                     f" on {len(labels)} reviews, the reference gets {acc(want):.4f}")
    return request, check


def _test_subset(ref, info):
    """(ids, lengths, labels) of load_imdb(subset=1000)'s test reviews, kept in the data cache as plain arrays (the
    whole tokenized corpus takes seconds to read; the grader needs these 1,000 rows)."""
    import hashlib

    source = ref.find_imdb(download=False)
    key = hashlib.sha256(repr((str(source), source.stat().st_size, source.stat().st_mtime_ns, info.tokenizer,
                               info.max_len)).encode()).hexdigest()[:16]
    path = ref.CACHE_DIR / f"grader-test-subset-{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as cached:
            return tuple(torch.from_numpy(cached[k]) for k in ("ids", "lengths", "labels"))
    except (OSError, KeyError, ValueError):
        pass
    test = ref.load_imdb(subset=1000, max_len=info.max_len, tokenizer=info.tokenizer, verbose=False).test
    path.parent.mkdir(parents=True, exist_ok=True)
    with ref.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, ids=test.ids.numpy(), lengths=test.lengths.numpy(), labels=test.labels.numpy())
    return test.ids, test.lengths, test.labels


# --- ex2/layers.py: back-propagation through time ---

def _gru_update(x_proj, gh, h):
    """The GRU's step in torch.nn.GRUCell's gate order, written plainly (the reference's numbers)."""
    H = h.shape[-1]
    r = torch.sigmoid(x_proj[..., :H] + gh[..., :H])
    z = torch.sigmoid(x_proj[..., H:2 * H] + gh[..., H:2 * H])
    n = torch.tanh(x_proj[..., 2 * H:] + r * gh[..., 2 * H:])
    return (1 - z) * n + z * h, (r, z, n, gh[..., 2 * H:])


def _rnn_update(x_proj, gh, h):
    h_new = torch.tanh(x_proj + gh)
    return h_new, h_new


def _bypass(what: str, value, shape) -> torch.Tensor:
    """The RNN's bypass gradient: None, a number 0 or a tensor, all read as a tensor of `shape`."""
    if value is None:
        return torch.zeros(shape, dtype=torch.double)
    got = _tensor(what, value)
    if got.dim() == 0:
        return got.expand(shape)
    return got


def case_bptt(gen, ref, source=None):
    calls, checks = [], []
    for kind, name, update in (("rnn", "RNNCell", _rnn_update), ("gru", "GRUCell", _gru_update)):
        blocks = 3 if kind == "gru" else 1
        for d_in, hidden in SIZES:
            # one step: update_backward with the cache update's docstring names, against autograd
            x_proj, gh = _rand(gen, 4, blocks * hidden).requires_grad_(), _rand(gen, 4, blocks * hidden).requires_grad_()
            h, dh_new = _rand(gen, 4, hidden).requires_grad_(), _rand(gen, 4, hidden)
            h_new, cache = update(x_proj, gh, h)
            want = [torch.zeros_like(t) if g is None else g  # the RNN's h reaches h' through gh only
                    for t, g in zip((x_proj, gh, h), torch.autograd.grad(h_new, [x_proj, gh, h], dh_new, allow_unused=True))]
            calls.append(_call(f"{name}.update_backward", dh_new, h.detach(), _detach(cache)))
            checks.append(functools.partial(_check_update_backward, f"{name}.update_backward (hidden {hidden})",
                                            want, kind))
            # a whole sequence: RecurrentBPTT.backward on the grader's forward pass, against autograd
            calls.append(_sequence(gen, kind, name, update, d_in, hidden, blocks, checks))
    request = _helpers_request("bptt", calls)

    def check(values):
        for one, got in zip(checks, _items("back-propagation", values, len(checks))):
            one(got)
    return request, check


def _detach(tree):
    if isinstance(tree, torch.Tensor):
        return tree.detach()
    return [_detach(t) for t in tree]


def _check_update_backward(what, want, kind, got):
    got = _items(what, got, 3)
    _close(f"{what}: ∂L/∂x_proj", got[0], want[0])
    _close(f"{what}: ∂L/∂gh", got[1], want[1])
    bypass = _bypass(f"{what}: the bypass", got[2], want[2].shape) if kind == "rnn" else got[2]
    _close(f"{what}: the part of ∂L/∂h that bypasses gh", bypass, want[2] if kind == "gru" else torch.zeros_like(want[2]))


def _sequence(gen, kind, name, update, d_in, hidden, blocks, checks) -> dict:
    B, T = 4, 6
    x_proj = _rand(gen, B, T, blocks * hidden).requires_grad_()
    w_hh, b_hh = _rand(gen, blocks * hidden, hidden, scale=0.5).requires_grad_(), _rand(gen, blocks * hidden).requires_grad_()
    h0 = _rand(gen, B, hidden).requires_grad_()
    keep = torch.arange(T)[None] < torch.tensor([6, 3, 1, 0])[:, None]  # padding, a 1-token and an empty review
    h, caches, h_prev = h0, [], []
    for t in range(T):
        h_new, cache = update(x_proj[:, t], torch.addmm(b_hh, h, w_hh.t()), h)
        caches.append(_detach(cache))
        h_prev.append(h.detach())
        h = torch.where(keep[:, t, None], h_new, h)
    grad_h = _rand(gen, B, hidden)
    want = torch.autograd.grad(h, [x_proj, w_hh, b_hh, h0], grad_h)
    what = f"{name} sequence (hidden {hidden}, lengths 6, 3, 1, 0): RecurrentBPTT.backward's"

    def check(got):
        got = _items(f"{what} result", got, 6)
        for label, value, expected in zip(("∂L/∂x_proj", "∂L/∂W_hh", "∂L/∂b_hh", "∂L/∂h_0"), got[1:5], want):
            _close(f"{what} {label} vs autograd", value, expected)
    checks.append(check)
    return {"op": "bptt_backward", "cell": name, "dtype": "float64",
            "args": [caches, h_prev, w_hh.detach(), keep, grad_h]}


# --- ex2/layers.py: pooling and attention ---

def _pool_reference(out: torch.Tensor, mask: torch.Tensor, weighted: bool):
    s = torch.where(mask, out[..., 0], torch.zeros((), dtype=out.dtype))
    if not weighted:
        return s.sum(-1), s, None
    w = torch.zeros_like(s)
    for b in range(out.shape[0]):
        real = mask[b]
        if real.any():
            w[b, real] = torch.softmax(out[b, real, 1], dim=0)
    return (w * s).sum(-1), s, w


def case_pooling(gen, ref, source=None):
    mask = torch.arange(5)[None] < torch.tensor([5, 2, 1, 0])[:, None]
    calls, wants = [], []
    for weighted in (False, True):
        out = _rand(gen, 4, 5, 2 if weighted else 1, scale=3.0)
        out[~mask] = 1e4  # whatever sits at padding must not count
        calls.append(_call("pool_token_scores", out, mask, weighted))
        wants.append((weighted, _pool_reference(out, mask, weighted)))

    def check(values):
        for (weighted, want), got in zip(wants, _items("pool_token_scores", values, 2)):
            kind = "weighted" if weighted else "sum"
            got = _items(f"pool_token_scores ({kind})", got, 3)
            _close(f"{kind}: the review logits", got[0], want[0])
            _close(f"{kind}: the sub-scores s (B, T), 0 at padding", got[1], want[1])
            if weighted:
                if got[2] is None:
                    raise AssertionError("weighted: return the weights w as the third value")
                _close("weighted: the weights w (softmax over the real tokens, 0 at padding and for an empty review)",
                       got[2], want[2])
            elif got[2] is not None:
                raise AssertionError("sum: the third value must be None (no weights)")
    return _helpers_request("pooling", calls), check


def _attention_reference(ref, dim, window, residual, weights, x, mask, relative=False):
    """Weights A and output of the restricted attention, by explicit loops over the real queries and their keys
    (with `relative`, the learned code r_{j-i} added to each neighbour's key and value input)."""
    layer = ref.SelfAttention(dim, window=window, residual=residual, positions=not relative,
                              relative=relative).double()
    with torch.no_grad():
        for name in ("q", "k", "v"):
            getattr(layer, name).weight.copy_(weights[f"{name}_weight"])
            getattr(layer, name).bias.copy_(weights[f"{name}_bias"])
        xp = x if relative else layer.positions(x)
        T = x.shape[1]
        code = weights["relative_code"] if relative else None
        attn, av = torch.zeros(x.shape[0], T, T, dtype=x.dtype), torch.zeros_like(x)
        for b in range(x.shape[0]):
            for i in range(T):
                keys = [j for j in range(T) if mask[b, j] and abs(j - i) <= (window if window is not None else T)]
                if not mask[b, i] or not keys:
                    continue
                shift = [code[j - i + window] if relative else 0.0 for j in keys]
                scores = torch.stack([layer.q(xp[b, i]) @ layer.k(xp[b, j] + r) for j, r in zip(keys, shift)])
                a = torch.softmax(scores / math.sqrt(dim), dim=0)
                attn[b, i, keys] = a
                av[b, i] = sum(a_j * layer.v(x[b, j] + r) for a_j, j, r in zip(a, keys, shift))
    return attn, (x + av if residual else av)


def case_attention(gen, ref, source=None):
    mask = torch.arange(7)[None] < torch.tensor([7, 4, 1, 0])[:, None]
    calls, wants = [], []
    for dim, window, residual, relative in ((4, 2, True, False), (6, None, False, False), (3, 0, True, False),
                                            (5, 1, False, False), (4, 2, False, True)):
        weights = {f"{n}_{p}": _rand(gen, *((dim, dim) if p == "weight" else (dim,)), scale=0.7)
                   for n in "qkv" for p in ("weight", "bias")}
        if relative:
            weights["relative_code"] = _rand(gen, 2 * window + 1, dim, scale=0.7)
        x = _rand(gen, 4, 7, dim)
        calls.append({"op": "attention", "dim": dim, "window": window, "residual": residual, "positions": not relative,
                      "relative": relative, "dtype": "float64", "args": [x, mask, weights]})
        wants.append((f"dim {dim}, window {window}, residual={residual}"
                      + (", relative positions (the term R)" if relative else ""),
                      *_attention_reference(ref, dim, window, residual, weights, x, mask, relative)))

    def check(values):
        for (what, attn, out), got in zip(wants, _items("SelfAttention", values, len(wants))):
            got = _items(f"SelfAttention.forward ({what})", got, 2)
            got_out, got_attn = _tensor("the output", got[0]), _tensor("the attention weights", got[1])
            if tuple(got_attn.shape) != tuple(attn.shape) or tuple(got_out.shape) != tuple(out.shape):
                raise AssertionError(f"SelfAttention.forward ({what}): output {tuple(got_out.shape)} and A "
                                     f"{tuple(got_attn.shape)}, expected {tuple(out.shape)} and {tuple(attn.shape)}")
            # rows of padding queries are free (they reach no output): only the real queries' rows are compared
            _close(f"attention weights of the real queries ({what}; padding keys and keys outside the window get 0)",
                   got_attn[mask], attn[mask])
            _close(f"attention output at the real tokens ({what})", got_out[mask], out[mask])
    return _helpers_request("attention", calls), check


# --- notebook cells ---

def _cell_request(question: str, source: str, needs: list[str], calls: list[dict], **extra) -> dict:
    return {"id": question, "kind": "cell", "cell": QUESTIONS[question]["cell"], "source": source,
            "needs": needs, "calls": calls, "default_dtype": "float64", **extra}


@functools.lru_cache(maxsize=8)
def _reference_namespace(question: str) -> dict:
    """The reference notebook's cell of `question`, run here: the given code (`forward`, `make_chain`,
    `nested_f`, ...) the expected values are computed with, so a submission that edits it cannot move its target."""
    q = QUESTIONS[question]
    namespace = {"torch": torch, "math": math, "F_nn": F, "np": np}
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        exec(compile(graded_cells(ROOT / q["notebook"])[q["cell"]], f"reference {q['cell']}", "exec"), namespace)
    finally:
        torch.set_default_dtype(before)
    return namespace


def case_q1a(gen, ref, source):
    calls, wants = [], []
    for d in (1, 3, 6):
        d1f, d2f, d3f = (_rand(gen, d) for _ in range(3))
        calls.append(_call("dF_dx_formula", d1f, d2f, d3f))
        wants.append((f"dF_dx_formula for f: R^3 -> R^{d}", d1f + 2 * d2f))

    def check(values):
        for (what, want), got in zip(wants, _items("dF_dx_formula", values, len(wants))):
            _close(what, got, want)
    return _cell_request("q1a", source, ["dF_dx_formula"], calls), check


def case_q1b(gen, ref, source):
    given = _reference_namespace("q1b")
    calls, checks = [], []
    for dims in ([1, 3, 6, 2], [1, 9, 4], [1, 5, 5, 5, 5, 7]):
        layers = [(W.double().requires_grad_(), b.double().requires_grad_()) for W, b in given["make_chain"](dims, gen)]
        x = _rand(gen, dims[-1]).requires_grad_()
        given["forward"](layers, x)[0].sum().backward()
        plain = [(W.detach(), b.detach()) for W, b in layers]
        calls.append(_call("backprop", plain, x.detach()))
        checks.append(functools.partial(_check_backprop, dims, [(W.grad, b.grad) for W, b in layers], x.grad))
        W, b = plain[0]
        h, v = _rand(gen, W.shape[1]), _rand(gen, 3, W.shape[0])
        J = torch.autograd.functional.jacobian(lambda h: torch.tanh(W @ h + b), h)
        calls.append(_call("vjp", [W, b], h, v))
        checks.append(lambda got, J=J, v=v, W=W: _close(
            f"vjp for a batch of 3 row vectors (layer {W.shape[0]}x{W.shape[1]})", got, v @ J))

    def check(values):
        for one, got in zip(checks, _items("the cell's functions", values, len(checks))):
            one(got)
    return _cell_request("q1b", source, ["vjp", "backprop"], calls), check


def _check_backprop(dims, grads, x_grad, got):
    got = _items(f"backprop on a chain {dims}", got, 2)
    _close(f"backprop on a chain {dims}: dF/dx", _tensor("dF/dx", got[1]).reshape(-1), x_grad)
    pairs = _items(f"backprop on a chain {dims}: the list of (dF/dW_i, dF/db_i)", got[0], len(grads))
    for i, (pair, (dW, db)) in enumerate(zip(pairs, grads), 1):
        pair = _items(f"backprop on a chain {dims}: (dF/dW_{i}, dF/db_{i})", pair, 2)
        _close(f"backprop on a chain {dims}: dF/dW_{i}", pair[0], dW)
        _close(f"backprop on a chain {dims}: dF/db_{i}", pair[1], db)


def case_q1d(gen, ref, source):
    given = _reference_namespace("q1d")
    calls, wants = [], []
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for n, m, k in ((1, 2, 3), (2, 4, 2), (5, 2, 3)):
            levels = given["make_nested"](n, m, k, gen)
            x = torch.randn(m, generator=gen)
            want = torch.autograd.functional.jacobian(lambda x: given["nested_f"](levels, x)[0], x)
            plain = [list(level) for level in levels]
            for way in ("nested_derivative_recursion", "nested_derivative_paths"):
                calls.append(_call(way, plain, x))
                wants.append((f"{way} with n = {n}, x in R^{m}, u in R^{k}", want))
    finally:
        torch.set_default_dtype(before)

    def check(values):
        for (what, want), got in zip(wants, _items("the cell's functions", values, len(wants))):
            _close(what, got, want)
    return _cell_request("q1d", source, ["nested_derivative_recursion", "nested_derivative_paths"], calls), check


def case_q1e(gen, ref, source):
    f, g, h = torch.exp, lambda t: 0.5 * t ** 3, torch.sin
    x = (torch.rand(7, generator=gen, dtype=torch.double) * 2 - 1).requires_grad_()
    (want,) = torch.autograd.grad(f(x + g(x + h(x))).sum(), x)
    with torch.no_grad():
        a = x + h(x)
        b = x + g(a)
        call = _call("residual_derivative", torch.exp(b), 1.5 * a ** 2, torch.cos(x))

    def check(values):
        (got,) = _items("residual_derivative", values, 1)
        _close("residual_derivative for f = exp, g(t) = t^3 / 2, h = sin", got, want)
    return _cell_request("q1e", source, ["residual_derivative"], [call]), check


def case_q3b(gen, ref, source):
    calls, wants = [], []
    for n_q, n_k, d_k, d_v in ((1, 1, 1, 1), (4, 6, 4, 8), (6, 3, 2, 5)):
        Q, K, V = _rand(gen, n_q, d_k), _rand(gen, n_k, d_k), _rand(gen, n_k, d_v)
        calls.append(_call("scaled_dot_product_attention", Q, K, V))
        wants.append(((n_q, n_k, d_k, d_v), torch.softmax(Q @ K.T / math.sqrt(d_k), dim=-1),
                      F.scaled_dot_product_attention(Q[None], K[None], V[None])[0]))

    def check(values):
        for ((n_q, n_k, d_k, d_v), weights, out), got in zip(wants, _items("the attention", values, len(wants))):
            if not isinstance(got, list) or len(got) != 2:
                raise AssertionError("return (output, weights)")
            _close(f"attention weights for {n_q} queries and {n_k} keys of size {d_k}", got[1], weights)
            _close(f"attention output for {n_q} queries and {n_k} keys (values of size {d_v})", got[0], out)
    return _cell_request("q3b", source, ["scaled_dot_product_attention"], calls), check


# --- notebook 03: the objective of the search ---

def case_objective(gen, ref, source):
    seeds = [int(s) for s in torch.randperm(9, generator=gen)[:3]]
    search = {"n_trials": 3, "epochs": 3, "n_train": 50, "seeds": seeds, "low": 10, "high": 40}
    curve = [float(0.0005 + 0.001 * torch.rand(1, generator=gen)), float(0.005 + 0.01 * torch.rand(1, generator=gen)),
             float(0.001 + 0.002 * torch.rand(1, generator=gen)), 0.5]
    settings = {"epochs": 10, "lr": 0.001, "batch_size": 64}
    sampler_seed = int(torch.randint(1000, (1,), generator=gen))
    studies = [{"cell": "rnn", "seed": sampler_seed, "n_trials": search["n_trials"], "repeat_first": True},
               {"cell": "gru", "seed": sampler_seed + 1, "n_trials": 1, "prune_at": 2}]
    request = _cell_request("objective", source, ["make_objective"], [], objective=True, curve=curve, search=search,
                            settings=settings, studies=studies, default_dtype="float32")

    def value(hidden, seed, epoch):  # the stand-in's made-up validation accuracy
        return curve[3] + curve[0] * hidden + curve[1] * seed + curve[2] * epoch

    def check(values):
        plain, pruned = _items("the objective's studies", values, 2)
        _check_study(plain, studies[0], search, value)
        _check_pruned(pruned, studies[1], search, value)
    return request, check


def _check_study(trials, plan, search, value):
    if not isinstance(trials, list) or len(trials) != plan["n_trials"] + 1:
        raise AssertionError("every trial must finish (an exception stopped the study)")
    trained: dict[int, int] = {}
    for trial in trials:
        hidden = trial["params"].get("hidden")
        if not isinstance(hidden, int) or not search["low"] <= hidden <= search["high"]:
            raise AssertionError(f"suggest 'hidden' in [SEARCH['low'], SEARCH['high']] = [10, 40]; got {hidden}")
        calls = trial["calls"]
        want = float(np.mean([value(hidden, s, search["epochs"]) for s in search["seeds"]]))
        if hidden in trained:  # a size already trained: its stored result, no training, nothing reported
            if calls:
                raise AssertionError(f"hidden = {hidden} was trained before (trial {trained[hidden]}): return its "
                                     f"value without training it again")
            if trial["user_attrs"].get("repeat_of") != trained[hidden]:
                raise AssertionError(f"a repeated size sets the user attribute 'repeat_of' to the trial it repeats "
                                     f"({trained[hidden]}); got {trial['user_attrs'].get('repeat_of')}")
            if trial["reported"]:
                raise AssertionError("a repeated size reports nothing to the pruner")
        elif not calls:
            raise AssertionError(f"train the trial's hidden size {hidden}: no call of helpers.train_model")
        else:
            seen = [(c["name"], c["seed"], c["hidden"], c["epochs"], c["data_is_search_data"]) for c in calls]
            if seen != [(plan["cell"], s, hidden, search["epochs"], True) for s in search["seeds"]]:
                raise AssertionError(f"train the cell {plan['cell']!r} with the trial's hidden size {hidden} once per "
                                     f"seed in SEARCH['seeds'] for SEARCH['epochs'] epochs on search_data; got "
                                     f"(name, seed, hidden, epochs, search_data?) = {seen}")
            first = [[e, value(hidden, search["seeds"][0], e)] for e in range(1, search["epochs"] + 1)]
            if not _same(trial["reported"], first):
                raise AssertionError(f"report the first seed's validation accuracy to the pruner after every epoch "
                                     f"({[round(v, 4) for _, v in first]}); got {trial['reported']}")
            seed_values = [value(hidden, s, search["epochs"]) for s in search["seeds"]]
            if not _same(trial["user_attrs"].get("seed_values"), seed_values):
                raise AssertionError(f"set the user attribute 'seed_values' to each seed's best validation accuracy; "
                                     f"got {trial['user_attrs'].get('seed_values')}")
            trained[hidden] = trial["number"]
        if trial["state"] != "COMPLETE" or not isinstance(trial["value"], float) or abs(trial["value"] - want) > 1e-12:
            raise AssertionError(f"return the mean of the seeds' best validation accuracies ({want:.4f}); "
                                 f"got {trial['value']} ({trial['state']})")


def _check_pruned(trials, plan, search, value):
    if not isinstance(trials, list) or len(trials) != 1:
        raise AssertionError("every trial must finish (an exception other than optuna.TrialPruned stopped the study)")
    trial = trials[0]
    hidden, at = trial["params"].get("hidden"), plan["prune_at"]
    if trial["state"] != "PRUNED":
        raise AssertionError(f"when trial.should_prune() says so after an epoch, raise optuna.TrialPruned (a pruner "
                             f"that prunes after epoch {at} left the trial {trial['state']})")
    seen = [(c["seed"], c["callback"]) for c in trial["calls"]]
    if seen != [(search["seeds"][0], True)]:
        raise AssertionError(f"a pruned trial trains only the first seed, with the reporting callback; got "
                             f"(seed, callback?) = {seen}")
    first = [[e, value(hidden, search["seeds"][0], e)] for e in range(1, at + 1)]
    if not _same(trial["reported"], first):
        raise AssertionError(f"report the first seed's validation accuracy after every epoch until pruned; got "
                             f"{trial['reported']}")


def _same(got, want) -> bool:
    try:
        return len(got) == len(want) and np.allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float),
                                                     rtol=0, atol=1e-12)
    except (TypeError, ValueError):
        return False


CASES = {q: globals()[f"case_{q}"] for q in QUESTIONS}
"""Question id -> its case builder (a test that the two lists agree keeps them in step)."""
