"""The grader's hidden tests, one group per question. They stay with the reference: `tools/make_assignment.py`
never copies this file into the student release, and `tools/grade.py` runs it.

Each question is graded on a *hybrid* module: the reference helpers.py with only that question's functions
taken from the submission (`QUESTIONS[q]["replace"]`). A mistake in one part of a submission therefore costs
that part's points and no others. A question's tests raise AssertionError with a message meant for the student.
They check what the notebooks' public self-checks do not: other sizes, padding and masks, edge cases, and the
reference checkpoints run through the student's code.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
NB01 = "notebooks/01_derivatives_backprop_skip_connections.ipynb"
NB02 = "notebooks/02_architectures_and_text_to_image.ipynb"
NB03 = "notebooks/03_rnn_gru_tpe_search.ipynb"
QUESTIONS = {
    "rnn_cell": {"points": 2, "title": "RNN cell: forward step", "where": "helpers.py, RNNCell.update",
                 "replace": ["RNNCell.update"]},
    "gru_cell": {"points": 3, "title": "GRU cell: forward step", "where": "helpers.py, GRUCell.update",
                 "replace": ["GRUCell.update"]},
    "bptt": {"points": 4, "title": "Back-propagation through time, by hand",
             "where": "helpers.py, RNNCell/GRUCell.update_backward and _RecurrentBPTT.backward",
             "replace": ["RNNCell.update_backward", "GRUCell.update_backward", "_RecurrentBPTT.backward"]},
    "pooling": {"points": 2, "title": "SUM and WEIGHTED: combining sub-scores and weights",
                "where": "helpers.py, pool_token_scores", "replace": ["pool_token_scores"]},
    "attention": {"points": 3, "title": "Restricted self-attention", "where": "helpers.py, SelfAttention.forward",
                  "replace": ["SelfAttention.forward"]},
    "q1a": {"points": 1, "title": "Q1(a): ∂F/∂x of f(x + y, 2x, z) as a formula",
            "where": "notebook 01, section (a), dF_dx_formula", "notebook": NB01, "cell": "q1a_dF_dx"},
    "q1b": {"points": 2, "title": "Q1(b): back-propagation through a chain (VJPs, weight gradients)",
            "where": "notebook 01, section (b), vjp and backprop", "notebook": NB01, "cell": "q1b_backprop"},
    "q1d": {"points": 2, "title": "Q1(d): the derivative of the nested form, by recursion and as a sum over paths",
            "where": "notebook 01, section (d), nested_derivative_recursion and nested_derivative_paths",
            "notebook": NB01, "cell": "q1d_recursion"},
    "q1e": {"points": 1, "title": "Q1(e): the derivative of the residual form",
            "where": "notebook 01, section (e), residual_derivative", "notebook": NB01, "cell": "q1e_residual"},
    "q3b": {"points": 1, "title": "Q3(b): scaled dot-product attention (words and quadrants)",
            "where": "notebook 02, Q3(b), scaled_dot_product_attention", "notebook": NB02, "cell": "q3b_attention"},
    "objective": {"points": 2, "title": "The Optuna objective of the hidden-size search",
                  "where": "notebook 03, section 6, make_objective", "notebook": NB03, "cell": "q6_objective"},
}
"""Question id -> points, title, where the student writes it, and what is graded: the helpers.py functions taken
from the submission (`replace`), or the code cell of a notebook (`notebook`, the cell's nbgrader `grade_id`).
Question q is graded by `test_<q>(graded, reference)` below."""


@functools.lru_cache(maxsize=16)
def graded_cells(notebook: Path) -> dict[str, str]:
    """{grade_id: source} of a notebook's nbgrader cells, read once per process."""
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


SIZES = [(1, 1), (3, 2), (5, 7)]  # (input size, hidden size): the notebooks' checks use others


def _close(what: str, got: torch.Tensor, want: torch.Tensor, tol: float = 1e-9) -> None:
    if tuple(got.shape) != tuple(want.shape):
        raise AssertionError(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    err = (got - want).abs().max().item() if got.numel() else 0.0
    if not err <= tol:  # also catches NaN
        raise AssertionError(f"{what}: differs from the reference by {err:.3g} (tolerance {tol:g})")


def _cells(h, cell: str, reference):
    """The module's cell and torch's, with the same weights, in double precision."""
    for d_in, hidden in SIZES:
        torch.manual_seed(d_in * 10 + hidden)
        mine = (h.GRUCell if cell == "gru" else h.RNNCell)(d_in, hidden).double()
        ref = reference(d_in, hidden).double()
        with torch.no_grad():
            ref.weight_ih.copy_(mine.ih.weight)
            ref.weight_hh.copy_(mine.hh.weight)
            ref.bias_ih.copy_(mine.ih.bias)
            ref.bias_hh.copy_(mine.hh.bias)
        yield d_in, hidden, mine, ref


def _forward_step(h, cell: str, reference) -> None:
    for d_in, hidden, mine, ref in _cells(h, cell, reference):
        for batch in (1, 4):
            x = torch.randn(batch, d_in, dtype=torch.double)
            state = torch.randn(batch, hidden, dtype=torch.double)
            _close(f"{cell.upper()} step, input {d_in}, hidden {hidden}, batch {batch}", mine(x, state), ref(x, state))
        # a whole padded batch through the training path: the state at each review's last real token
        x = torch.randn(3, 6, d_in, dtype=torch.double)
        lengths = torch.tensor([6, 2, 1])
        with torch.no_grad():
            got = h.run_cell(mine, x, h.lengths_to_mask(lengths, 6))
        for b, n in enumerate(lengths.tolist()):
            state = torch.zeros(1, hidden, dtype=torch.double)
            for t in range(n):
                state = ref(x[b:b + 1, t], state)
            _close(f"{cell.upper()} over a padded batch (review {b}, length {n})", got[b:b + 1], state)


def test_rnn_cell(h, ref) -> None:
    _forward_step(h, "rnn", torch.nn.RNNCell)


def test_gru_cell(h, ref) -> None:
    _forward_step(h, "gru", torch.nn.GRUCell)
    # the committed GRU checkpoint run through the student's GRUCell gives the reference's numbers
    mine, theirs = h.load_checkpoint(h.checkpoint_path("gru")), ref.load_checkpoint(ref.checkpoint_path("gru"))
    texts = list(ref.WRITEUP_REVIEWS) + ["a dull, predictable plot and wooden acting", "one of the best films this year"]
    _close("the committed GRU checkpoint through your GRUCell: P(positive) of four reviews",
           torch.as_tensor(h.predict(mine, texts)), torch.as_tensor(ref.predict(theirs, texts)), 1e-5)
    try:
        ref.find_imdb(download=False)
    except ref.ImdbError:
        return  # no IMDB here: the four reviews above are the check
    test = ref.load_imdb(subset=1000, verbose=False).test
    got, want = h.evaluate(mine, test)["acc"], ref.evaluate(theirs, test)["acc"]
    if got != want:
        raise AssertionError(f"the committed GRU checkpoint through your GRUCell: test accuracy {got:.4f} on "
                             f"{len(test)} reviews, the reference gets {want:.4f}")


def test_bptt(h, ref) -> None:
    for cell in ("rnn", "gru"):
        for d_in, hidden in SIZES:
            torch.manual_seed(d_in + 7 * hidden)
            mine = (h.GRUCell if cell == "gru" else h.RNNCell)(d_in, hidden).double()
            x = torch.randn(4, 6, d_in, dtype=torch.double, requires_grad=True)
            mask = h.lengths_to_mask(torch.tensor([6, 3, 1, 0]), 6)  # padding, a 1-token and an empty review
            weights = torch.randn(hidden, dtype=torch.double)
            grads = []
            for manual in (True, False):
                out = h.run_cell(mine, x, mask, manual_bptt=manual)
                grads.append(torch.autograd.grad((out * weights).sum(), [x, *mine.parameters()]))
            for name, got, want in zip(("x", "W_ih", "b_ih", "W_hh", "b_hh"), *grads):
                _close(f"{cell.upper()} (input {d_in}, hidden {hidden}): ∂L/∂{name} by hand vs autograd", got, want)


def _pool_reference(out: torch.Tensor, mask: torch.Tensor, weighted: bool):
    s = torch.where(mask, out[..., 0], torch.zeros(()))
    if not weighted:
        return s.sum(-1), s, None
    w = torch.zeros_like(s)
    for b in range(out.shape[0]):
        real = mask[b]
        if real.any():
            w[b, real] = torch.softmax(out[b, real, 1], dim=0)
    return (w * s).sum(-1), s, w


def test_pooling(h, ref) -> None:
    torch.manual_seed(3)
    mask = h.lengths_to_mask(torch.tensor([5, 2, 1, 0]), 5)
    for weighted in (False, True):
        out = 3 * torch.randn(4, 5, 2 if weighted else 1, dtype=torch.double)
        out[~mask] = 1e4  # whatever sits at padding must not count
        got = h.pool_token_scores(out, mask, weighted)
        want = _pool_reference(out, mask, weighted)
        kind = "weighted" if weighted else "sum"
        _close(f"{kind}: the review logits", got[0], want[0])
        _close(f"{kind}: the sub-scores s (0 at padding)", got[1], want[1])
        if weighted:
            if got[2] is None:
                raise AssertionError("weighted: return the weights w as the third value")
            _close("weighted: the weights w (softmax over the real tokens, 0 at padding and for an empty review)",
                   got[2], want[2])
        elif got[2] is not None:
            raise AssertionError("sum: the third value must be None (no weights)")


def _attention_reference(layer, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    T = x.shape[1]
    xp = x if layer.positions is None else layer.positions(x)
    allowed = mask[:, None, :].expand(-1, T, -1)
    if layer.window is not None:
        i = torch.arange(T)
        allowed = allowed & ((i[:, None] - i[None, :]).abs() <= layer.window)
    scores = layer.q(xp) @ layer.k(xp).transpose(1, 2) / math.sqrt(x.shape[-1])
    attn = torch.zeros_like(scores)
    for b in range(x.shape[0]):
        for q in range(T):
            keys = allowed[b, q]
            if mask[b, q] and keys.any():
                attn[b, q, keys] = torch.softmax(scores[b, q, keys], dim=0)
    return attn


def test_attention(h, ref) -> None:
    mask = h.lengths_to_mask(torch.tensor([7, 4, 1]), 7)
    for dim, window, residual in ((4, 2, True), (6, None, False), (3, 0, True), (5, 1, False)):
        torch.manual_seed(dim)
        layer = h.SelfAttention(dim, window=window, residual=residual).double()
        x = torch.randn(3, 7, dim, dtype=torch.double)
        with torch.no_grad():
            out, attn = layer(x, mask)
            want = _attention_reference(layer, x, mask)
        what = f"dim {dim}, window {window}"
        _close(f"attention weights ({what}; padding keys and keys outside the window get 0, padding queries a zero row)",
               attn, want)
        av = want @ layer.v(x)
        _close(f"attention output ({what}, residual={residual})", out, x + av if residual else av)
        if not torch.isfinite(out).all():
            raise AssertionError(f"attention output ({what}) has NaN or inf")
    # a review of only padding (length 0) gives zeros, not NaN
    layer = h.SelfAttention(4, window=2).double()
    with torch.no_grad():
        out, attn = layer(torch.randn(1, 3, 4, dtype=torch.double), torch.zeros(1, 3, dtype=torch.bool))
    _close("an all-padding review: its attention rows are all zero", attn, torch.zeros(1, 3, 3, dtype=torch.double))


@contextlib.contextmanager
def _float64():
    """Notebook 01 works in float64 (its setup cell sets the default dtype); its cells are graded the same way."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _run_cell(source: str, name: str, *needed: str) -> dict:
    namespace = {"torch": torch, "math": math, "F_nn": F}
    exec(compile(source, name, "exec"), namespace)
    missing = [f for f in needed if not callable(namespace.get(f))]
    if missing:
        raise AssertionError(f"the cell must define {', '.join(missing)}")
    return namespace


def _reference_cell(question: str, *needed: str) -> dict:
    """The reference notebook's cell of `question`, run: the given code (`forward`, `make_chain`, `nested_f`, ...)
    that the expected values are computed with, so a submission that edits it does not move its own target."""
    q = QUESTIONS[question]
    return _run_cell(graded_cells(ROOT / q["notebook"])[q["cell"]], f"reference {q['cell']}", *needed)


def test_q1a(source: str, ref) -> None:
    ns = _run_cell(source, "q1a_dF_dx", "dF_dx_formula")
    gen = torch.Generator().manual_seed(11)
    for d in (1, 3, 6):
        d1f, d2f, d3f = (torch.randn(d, dtype=torch.double, generator=gen) for _ in range(3))
        _close(f"dF_dx_formula for f: R^3 -> R^{d}", torch.as_tensor(ns["dF_dx_formula"](d1f, d2f, d3f)), d1f + 2 * d2f)


def test_q1b(source: str, ref) -> None:
    ns = _run_cell(source, "q1b_backprop", "vjp", "backprop")
    gen = torch.Generator().manual_seed(5)
    with _float64():
        _q1b_chains(ns, _reference_cell("q1b", "make_chain", "forward"), gen)


def _q1b_chains(ns: dict, given: dict, gen: torch.Generator) -> None:
    for dims in ([1, 3, 6, 2], [1, 9, 4], [1, 5, 5, 5, 5, 7]):
        layers = [(W.double().requires_grad_(), b.double().requires_grad_()) for W, b in given["make_chain"](dims, gen)]
        x = torch.randn(dims[-1], dtype=torch.double, generator=gen, requires_grad=True)
        given["forward"](layers, x)[0].sum().backward()
        with torch.no_grad():
            grads, dF_dx = ns["backprop"](layers, x)
            _close(f"backprop on a chain {dims}: dF/dx", torch.as_tensor(dF_dx).reshape(-1), x.grad)
            for i, ((dW, db), (W, b)) in enumerate(zip(grads, layers), 1):
                _close(f"backprop on a chain {dims}: dF/dW_{i}", dW, W.grad)
                _close(f"backprop on a chain {dims}: dF/db_{i}", db, b.grad)
            W, b = (t.detach() for t in layers[0])
            h = torch.randn(W.shape[1], dtype=torch.double, generator=gen)
            v = torch.randn(3, W.shape[0], dtype=torch.double, generator=gen)
            J = torch.autograd.functional.jacobian(lambda h: torch.tanh(W @ h + b), h)
            _close(f"vjp for a batch of 3 row vectors (layer {W.shape[0]}x{W.shape[1]})", ns["vjp"]((W, b), h, v), v @ J)


def test_q1d(source: str, ref) -> None:
    ns = _run_cell(source, "q1d_recursion", "nested_derivative_recursion", "nested_derivative_paths")
    gen = torch.Generator().manual_seed(9)
    with _float64():
        given = _reference_cell("q1d", "make_nested", "nested_f")
        for n, m, k in ((1, 2, 3), (2, 4, 2), (5, 2, 3)):
            levels = given["make_nested"](n, m, k, gen)
            x = torch.randn(m, generator=gen)
            want = torch.autograd.functional.jacobian(lambda x: given["nested_f"](levels, x)[0], x)
            for way in ("nested_derivative_recursion", "nested_derivative_paths"):
                _close(f"{way} with n = {n}, x in R^{m}, u in R^{k}", ns[way](levels, x), want)


def test_q1e(source: str, ref) -> None:
    ns = _run_cell(source, "q1e_residual", "residual_derivative")
    f, g, h = torch.exp, lambda t: 0.5 * t ** 3, torch.sin
    x = torch.linspace(-1, 1, 7, dtype=torch.double, requires_grad=True)
    (want,) = torch.autograd.grad(f(x + g(x + h(x))).sum(), x)
    with torch.no_grad():
        a = x + h(x)
        b = x + g(a)
        got = ns["residual_derivative"](torch.exp(b), 1.5 * a ** 2, torch.cos(x))
    _close("residual_derivative for f = exp, g(t) = t^3 / 2, h = sin", torch.as_tensor(got), want)


def test_q3b(source: str, ref) -> None:
    ns = _run_cell(source, "q3b_attention", "scaled_dot_product_attention")
    gen = torch.Generator().manual_seed(2)
    for n_q, n_k, d_k, d_v in ((1, 1, 1, 1), (4, 6, 4, 8), (6, 3, 2, 5)):
        Q, K = torch.randn(n_q, d_k, generator=gen, dtype=torch.double), torch.randn(n_k, d_k, generator=gen, dtype=torch.double)
        V = torch.randn(n_k, d_v, generator=gen, dtype=torch.double)
        got = ns["scaled_dot_product_attention"](Q, K, V)
        if not isinstance(got, tuple) or len(got) != 2:
            raise AssertionError("return (output, weights)")
        weights = torch.softmax(Q @ K.T / math.sqrt(d_k), dim=-1)
        _close(f"attention weights for {n_q} queries and {n_k} keys of size {d_k}", torch.as_tensor(got[1]), weights)
        _close(f"attention output for {n_q} queries and {n_k} keys (values of size {d_v})", torch.as_tensor(got[0]),
               F.scaled_dot_product_attention(Q[None], K[None], V[None])[0])


def test_objective(source: str, ref) -> None:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = {"n_trials": 3, "epochs": 3, "n_train": 50, "seeds": (4, 2, 7), "low": 10, "high": 40}
    data, calls = object(), []

    def curve(hidden: int, seed: int, epoch: int) -> float:  # the made-up validation accuracy of the stand-in
        return 0.5 + hidden / 1000 + seed / 100 + epoch / 1000

    def train_model(name, data_, seed=0, config=None, callback=None, progress=True, verbose=True, **settings):
        hidden = (config or {}).get("hidden")
        calls.append({"name": name, "data": data_, "seed": seed, "hidden": hidden, "epochs": settings.get("epochs")})
        history = ref.History()
        for epoch in range(1, (settings.get("epochs") or 1) + 1):
            history.val_acc.append(curve(hidden or 0, seed, epoch))
            if callback is not None:
                callback(epoch, history)
        return None, history

    fake = types.SimpleNamespace(recipe=ref.recipe, History=ref.History, train_model=train_model)
    namespace = {"helpers": fake, "optuna": optuna, "np": np, "TrialState": TrialState, "SEARCH": search,
                 "search_data": data}
    exec(compile(source, "make_objective", "exec"), namespace)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3),
                                pruner=optuna.pruners.NopPruner())
    trained: set[int] = set()
    for n in range(search["n_trials"] + 1):
        if n == search["n_trials"]:  # the first size proposed again: reuse its result or train it again
            study.enqueue_trial({"hidden": study.trials[0].params["hidden"]})
        calls.clear()
        study.optimize(namespace["make_objective"]("rnn", study), n_trials=1)
        trial = study.trials[-1]
        hidden = trial.params.get("hidden")
        if hidden is None or not search["low"] <= hidden <= search["high"]:
            raise AssertionError(f"suggest 'hidden' in [SEARCH['low'], SEARCH['high']] = [10, 40]; got {hidden}")
        if not calls and hidden not in trained:
            raise AssertionError(f"train the trial's hidden size {hidden}: no call of helpers.train_model")
        seen = [(c["name"], c["seed"], c["hidden"], c["epochs"], c["data"] is data) for c in calls]
        if calls and seen != [("rnn", s, hidden, search["epochs"], True) for s in search["seeds"]]:
            raise AssertionError(f"train the cell 'rnn' with the trial's hidden size {hidden} once per seed in "
                                 f"SEARCH['seeds'] for SEARCH['epochs'] epochs on search_data; got "
                                 f"(name, seed, hidden, epochs, search_data?) = {seen}")
        want = float(np.mean([curve(hidden, s, search["epochs"]) for s in search["seeds"]]))
        if trial.value is None or abs(trial.value - want) > 1e-12:
            raise AssertionError(f"return the mean of the seeds' best validation accuracies ({want:.4f}); got {trial.value}")
        if not calls:
            continue  # a size already trained, its stored result returned
        trained.add(hidden)
        reported = [round(v, 12) for _, v in sorted(trial.intermediate_values.items())]  # in step order
        first_seed = [round(curve(hidden, search["seeds"][0], e), 12) for e in range(1, search["epochs"] + 1)]
        if reported != first_seed:
            raise AssertionError(f"report the first seed's validation accuracy to the pruner after every epoch "
                                 f"({first_seed}); got {reported}")
