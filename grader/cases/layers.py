"""The hidden tests of the parts a student writes in the Python file: the recurrent cells, back-propagation
through time, pooling and attention (each `case_<question>(gen, ref, source)`, see the package's docstring)."""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from ex2 import runtime
from ex2.checkpoints import load_checkpoint
from ex2.data import ImdbError, encode, find_imdb, load_imdb
from ex2.runtime import ROOT
from grader.cases import compare

SIZES = [(1, 1), (3, 2), (5, 7)]  # (input size, hidden size): the notebooks' checks use others


def _torch_cell(kind: str, d_in: int, hidden: int, gen: torch.Generator):
    cell = (torch.nn.GRUCell if kind == "gru" else torch.nn.RNNCell)(d_in, hidden).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(compare.rand(gen, *p.shape, scale=0.5))
    return cell


def _steps(kind: str, gen: torch.Generator):
    """Single steps of random cells: update's inputs (x_proj, gh, h) and torch.nn's new state."""
    name = "GRUCell" if kind == "gru" else "RNNCell"
    calls, wants = [], []
    for d_in, hidden in SIZES:
        cell = _torch_cell(kind, d_in, hidden, gen)
        for batch in (1, 4):
            x, h = compare.rand(gen, batch, d_in), compare.rand(gen, batch, hidden)
            x_proj, gh = F.linear(x, cell.weight_ih, cell.bias_ih), F.linear(h, cell.weight_hh, cell.bias_hh)
            calls.append(compare.call(f"{name}.update", x_proj, gh, h))
            wants.append((f"{name}.update's h' (input {d_in}, hidden {hidden}, batch {batch}) against torch.nn.{name}",
                          cell(x, h)))
        # a padded batch unrolled with the student's update (the harness's loop) against torch.nn's cell
        vocab, lengths = 9, torch.tensor([6, 2, 1])
        table, ids = compare.rand(gen, vocab, d_in), torch.randint(1, vocab, (3, 6), generator=gen)
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
        for (what, want), got in zip(wants, compare.items("the cell", values, len(wants))):
            if isinstance(got, list):  # update returns (h', cache)
                got = compare.items(what, got, 2)[0]
            compare.close(what, got, want)
    return check


def case_rnn_cell(gen, ref, source=None):
    calls, wants = _steps("rnn", gen)
    return compare.layers_request("rnn_cell", calls), _check_steps(wants)


def case_gru_cell(gen, ref, source=None):
    calls, wants = _steps("gru", gen)
    checkpoint = _checkpoint_case(ref)
    if checkpoint is not None:
        calls.append(checkpoint[0])
    check_steps = _check_steps(wants)

    def check(values):
        values = compare.items("the GRU cell", values, len(calls))
        check_steps(values[:len(wants)])
        if checkpoint is not None:
            checkpoint[1](values[-1])
    return compare.layers_request("gru_cell", calls), check


@functools.lru_cache(maxsize=2)
def _checkpoint_case(ref):
    """The committed GRU checkpoint run through the student's GRUCell.update: the child gets the checkpoint's
    (public) weights and the reviews' word vectors, sends back the final states; the grader applies the output
    layer, and compares P(positive) and accuracy with the reference model's."""
    path = ROOT / "checkpoints" / "gru.pt"
    if not path.is_file():
        return None
    model = load_checkpoint(path).cpu()
    texts = [*ref.WRITEUP_REVIEWS, "a dull, predictable plot and wooden acting", "one of the best films this year"]
    ids, lengths, _ = encode(texts, model.info.max_len, model.info.tokenizer)
    labels, what = None, "P(positive) of four reviews"
    try:
        ids, lengths, labels = _test_subset(model.info)
        what = f"P(positive) of {len(labels)} test reviews"
    except ImdbError:
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
        states = compare.tensor("the committed GRU's final states", states).float()
        if tuple(states.shape) != (len(lengths), cell.hidden_size):
            raise AssertionError(f"the committed GRU checkpoint through your GRUCell: final states of shape "
                                 f"{tuple(states.shape)}, expected {(len(lengths), cell.hidden_size)}")
        with torch.no_grad():
            got = torch.sigmoid(model.out(states).squeeze(-1)).double()
        compare.close(f"the committed GRU checkpoint through your GRUCell: {what}", got, want, 1e-4)
        if labels is not None:
            acc = lambda p: ((p > 0.5).long() == labels).double().mean().item()  # noqa: E731
            if acc(got) != acc(want):
                raise AssertionError(f"the committed GRU checkpoint through your GRUCell: test accuracy {acc(got):.4f}"
                                     f" on {len(labels)} reviews, the reference gets {acc(want):.4f}")
    return request, check


def warm_cache() -> None:
    """Tokenize, once, the test reviews the committed GRU's case needs (into data/cache/): the Gradescope autograder's
    setup.sh runs it when the image is built, so that no submission's run pays the seconds it takes."""
    path = ROOT / "checkpoints" / "gru.pt"
    if path.is_file():
        _test_subset(load_checkpoint(path).info)


def _test_subset(info):
    """(ids, lengths, labels) of load_imdb(subset=1000)'s test reviews, kept in the data cache as plain arrays (the
    whole tokenized corpus takes seconds to read; the grader needs these 1,000 rows)."""
    import hashlib

    source = find_imdb(download=False)
    key = hashlib.sha256(repr((str(source), source.stat().st_size, source.stat().st_mtime_ns, info.tokenizer,
                               info.max_len)).encode()).hexdigest()[:16]
    path = runtime.CACHE_DIR / f"grader-test-subset-{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as cached:
            return tuple(torch.from_numpy(cached[k]) for k in ("ids", "lengths", "labels"))
    except (OSError, KeyError, ValueError):
        pass
    test = load_imdb(subset=1000, max_len=info.max_len, tokenizer=info.tokenizer, verbose=False).test
    path.parent.mkdir(parents=True, exist_ok=True)
    with runtime.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, ids=test.ids.numpy(), lengths=test.lengths.numpy(), labels=test.labels.numpy())
    return test.ids, test.lengths, test.labels


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
    got = compare.tensor(what, value)
    if got.dim() == 0:
        return got.expand(shape)
    return got


def case_bptt(gen, ref, source=None):
    calls, checks = [], []
    for kind, name, update in (("rnn", "RNNCell", _rnn_update), ("gru", "GRUCell", _gru_update)):
        blocks = 3 if kind == "gru" else 1
        for d_in, hidden in SIZES:
            if kind == "rnn":  # one step of the RNN's update_backward (the GRU's is given code), against autograd
                calls.append(_rnn_step(gen, hidden, checks))
            # a whole sequence: RecurrentBPTT.backward on the grader's forward pass, against autograd
            calls.append(_sequence(gen, kind, name, update, d_in, hidden, blocks, checks))
    request = compare.layers_request("bptt", calls)

    def check(values):
        for one, got in zip(checks, compare.items("back-propagation", values, len(checks))):
            one(got)
    return request, check


def _rnn_step(gen, hidden, checks) -> dict:
    """One step of `RNNCell.update_backward`, with the cache `update`'s docstring names (h')."""
    x_proj, gh = compare.rand(gen, 4, hidden).requires_grad_(), compare.rand(gen, 4, hidden).requires_grad_()
    h, dh_new = compare.rand(gen, 4, hidden), compare.rand(gen, 4, hidden)
    h_new, cache = _rnn_update(x_proj, gh, h)
    want = torch.autograd.grad(h_new, [x_proj, gh], dh_new)
    checks.append(functools.partial(_check_update_backward, f"RNNCell.update_backward (hidden {hidden})", want))
    return compare.call("RNNCell.update_backward", dh_new, h, _detach(cache))


def _detach(tree):
    if isinstance(tree, torch.Tensor):
        return tree.detach()
    return [_detach(t) for t in tree]


def _check_update_backward(what, want, got):
    got = compare.items(what, got, 3)
    compare.close(f"{what}: ∂L/∂x_proj", got[0], want[0])
    compare.close(f"{what}: ∂L/∂gh", got[1], want[1])
    bypass = _bypass(f"{what}: the bypass", got[2], want[0].shape)  # the RNN's h reaches h' through gh only
    compare.close(f"{what}: the part of ∂L/∂h that bypasses gh", bypass, torch.zeros_like(want[0]))


def _sequence(gen, kind, name, update, d_in, hidden, blocks, checks) -> dict:
    B, T = 4, 6
    x_proj = compare.rand(gen, B, T, blocks * hidden).requires_grad_()
    w_hh = compare.rand(gen, blocks * hidden, hidden, scale=0.5).requires_grad_()
    b_hh = compare.rand(gen, blocks * hidden).requires_grad_()
    h0 = compare.rand(gen, B, hidden).requires_grad_()
    keep = torch.arange(T)[None] < torch.tensor([6, 3, 1, 0])[:, None]  # padding, a 1-token and an empty review
    h, caches, h_prev = h0, [], []
    for t in range(T):
        h_new, cache = update(x_proj[:, t], torch.addmm(b_hh, h, w_hh.t()), h)
        caches.append(_detach(cache))
        h_prev.append(h.detach())
        h = torch.where(keep[:, t, None], h_new, h)
    grad_h = compare.rand(gen, B, hidden)
    want = torch.autograd.grad(h, [x_proj, w_hh, b_hh, h0], grad_h)
    what = f"{name} sequence (hidden {hidden}, lengths 6, 3, 1, 0): RecurrentBPTT.backward's"

    def check(got):
        got = compare.items(f"{what} result", got, 6)
        for label, value, expected in zip(("∂L/∂x_proj", "∂L/∂W_hh", "∂L/∂b_hh", "∂L/∂h_0"), got[1:5], want):
            compare.close(f"{what} {label} vs autograd", value, expected)
    checks.append(check)
    return {"op": "bptt_backward", "cell": name, "dtype": "float64",
            "args": [caches, h_prev, w_hh.detach(), keep, grad_h]}


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
        out = compare.rand(gen, 4, 5, 2 if weighted else 1, scale=3.0)
        out[~mask] = 1e4  # whatever sits at padding must not count
        calls.append(compare.call("pool_token_scores", out, mask, weighted))
        wants.append((weighted, _pool_reference(out, mask, weighted)))

    def check(values):
        for (weighted, want), got in zip(wants, compare.items("pool_token_scores", values, 2)):
            kind = "weighted" if weighted else "sum"
            got = compare.items(f"pool_token_scores ({kind})", got, 3)
            compare.close(f"{kind}: the review logits", got[0], want[0])
            compare.close(f"{kind}: the sub-scores s (B, T), 0 at padding", got[1], want[1])
            if weighted:
                if got[2] is None:
                    raise AssertionError("weighted: return the weights w as the third value")
                compare.close("weighted: the weights w (softmax over the real tokens, 0 at padding and for an empty "
                              "review)", got[2], want[2])
            elif got[2] is not None:
                raise AssertionError("sum: the third value must be None (no weights)")
    return compare.layers_request("pooling", calls), check


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
        weights = {f"{n}_{p}": compare.rand(gen, *((dim, dim) if p == "weight" else (dim,)), scale=0.7)
                   for n in "qkv" for p in ("weight", "bias")}
        if relative:
            weights["relative_code"] = compare.rand(gen, 2 * window + 1, dim, scale=0.7)
        x = compare.rand(gen, 4, 7, dim)
        calls.append({"op": "attention", "dim": dim, "window": window, "residual": residual, "positions": not relative,
                      "relative": relative, "dtype": "float64", "args": [x, mask, weights]})
        wants.append((f"dim {dim}, window {window}, residual={residual}"
                      + (", relative positions (the term R)" if relative else ""),
                      *_attention_reference(ref, dim, window, residual, weights, x, mask, relative)))

    def check(values):
        for (what, attn, out), got in zip(wants, compare.items("SelfAttention", values, len(wants))):
            got = compare.items(f"SelfAttention.forward ({what})", got, 2)
            got_out, got_attn = compare.tensor("the output", got[0]), compare.tensor("the attention weights", got[1])
            if tuple(got_attn.shape) != tuple(attn.shape) or tuple(got_out.shape) != tuple(out.shape):
                raise AssertionError(f"SelfAttention.forward ({what}): output {tuple(got_out.shape)} and A "
                                     f"{tuple(got_attn.shape)}, expected {tuple(out.shape)} and {tuple(attn.shape)}")
            # rows of padding queries are free (they reach no output): only the real queries' rows are compared
            compare.close(f"attention weights of the real queries ({what}; padding keys and keys outside the window "
                          f"get 0)", got_attn[mask], attn[mask])
            compare.close(f"attention output at the real tokens ({what})", got_out[mask], out[mask])
    return compare.layers_request("attention", calls), check
