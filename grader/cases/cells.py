"""The hidden tests of the notebooks' graded code cells: notebook 01's derivatives and back-propagation,
notebook 02's attention, notebook 03's search objective (each `case_<question>(gen, ref, source)`, see the package's
docstring). A cell's given code comes from the reference notebook, so a submission cannot move its own target."""
from __future__ import annotations

import functools
import json
import math

import numpy as np
import torch
import torch.nn.functional as F

from assignment.questions import QUESTIONS
from ex2.runtime import ROOT
from grader.cases import compare
from grader.notebooks import nbgrader_cells


@functools.lru_cache(maxsize=8)
def reference_cells(notebook: str) -> dict[str, str]:
    """{grade_id: source} of a reference notebook (a path from the repository root), read once per process, as
    data: nothing in it runs."""
    return nbgrader_cells(json.loads((ROOT / notebook).read_text(encoding="utf-8")))


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
        exec(compile(reference_cells(q["notebook"])[q["cell"]], f"reference {q['cell']}", "exec"), namespace)
    finally:
        torch.set_default_dtype(before)
    return namespace


def case_q1a(gen, ref, source):
    calls, wants = [], []
    for d in (1, 3, 6):
        d1f, d2f, d3f = (compare.rand(gen, d) for _ in range(3))
        calls.append(compare.call("dF_dx_formula", d1f, d2f, d3f))
        wants.append((f"dF_dx_formula for f: R^3 -> R^{d}", d1f + 2 * d2f))

    def check(values):
        for (what, want), got in zip(wants, compare.items("dF_dx_formula", values, len(wants))):
            compare.close(what, got, want)
    return _cell_request("q1a", source, ["dF_dx_formula"], calls), check


def case_q1b(gen, ref, source):
    given = _reference_namespace("q1b")
    calls, checks = [], []
    for dims in ([1, 3, 6, 2], [1, 9, 4], [1, 5, 5, 5, 5, 7]):
        layers = [(W.double().requires_grad_(), b.double().requires_grad_()) for W, b in given["make_chain"](dims, gen)]
        x = compare.rand(gen, dims[-1]).requires_grad_()
        given["forward"](layers, x)[0].sum().backward()
        plain = [(W.detach(), b.detach()) for W, b in layers]
        calls.append(compare.call("backprop", plain, x.detach()))
        checks.append(functools.partial(_check_backprop, dims, [(W.grad, b.grad) for W, b in layers], x.grad))
        W, b = plain[0]
        h, v = compare.rand(gen, W.shape[1]), compare.rand(gen, 3, W.shape[0])
        J = torch.autograd.functional.jacobian(lambda h: torch.tanh(W @ h + b), h)
        calls.append(compare.call("vjp", [W, b], h, v))
        checks.append(lambda got, J=J, v=v, W=W: compare.close(
            f"vjp for a batch of 3 row vectors (layer {W.shape[0]}x{W.shape[1]})", got, v @ J))

    def check(values):
        for one, got in zip(checks, compare.items("the cell's functions", values, len(checks))):
            one(got)
    return _cell_request("q1b", source, ["vjp", "backprop"], calls), check


def _check_backprop(dims, grads, x_grad, got):
    got = compare.items(f"backprop on a chain {dims}", got, 2)
    compare.close(f"backprop on a chain {dims}: dF/dx", compare.tensor("dF/dx", got[1]).reshape(-1), x_grad)
    pairs = compare.items(f"backprop on a chain {dims}: the list of (dF/dW_i, dF/db_i)", got[0], len(grads))
    for i, (pair, (dW, db)) in enumerate(zip(pairs, grads), 1):
        pair = compare.items(f"backprop on a chain {dims}: (dF/dW_{i}, dF/db_{i})", pair, 2)
        compare.close(f"backprop on a chain {dims}: dF/dW_{i}", pair[0], dW)
        compare.close(f"backprop on a chain {dims}: dF/db_{i}", pair[1], db)


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
                calls.append(compare.call(way, plain, x))
                wants.append((f"{way} with n = {n}, x in R^{m}, u in R^{k}", want))
    finally:
        torch.set_default_dtype(before)

    def check(values):
        for (what, want), got in zip(wants, compare.items("the cell's functions", values, len(wants))):
            compare.close(what, got, want)
    return _cell_request("q1d", source, ["nested_derivative_recursion", "nested_derivative_paths"], calls), check


def case_q1e(gen, ref, source):
    f, g, h = torch.exp, lambda t: 0.5 * t ** 3, torch.sin
    x = (torch.rand(7, generator=gen, dtype=torch.double) * 2 - 1).requires_grad_()
    (want,) = torch.autograd.grad(f(x + g(x + h(x))).sum(), x)
    with torch.no_grad():
        a = x + h(x)
        b = x + g(a)
        call = compare.call("residual_derivative", torch.exp(b), 1.5 * a ** 2, torch.cos(x))

    def check(values):
        (got,) = compare.items("residual_derivative", values, 1)
        compare.close("residual_derivative for f = exp, g(t) = t^3 / 2, h = sin", got, want)
    return _cell_request("q1e", source, ["residual_derivative"], [call]), check


def case_q3b(gen, ref, source):
    calls, wants = [], []
    for n_q, n_k, d_k, d_v in ((1, 1, 1, 1), (4, 6, 4, 8), (6, 3, 2, 5)):
        Q, K, V = compare.rand(gen, n_q, d_k), compare.rand(gen, n_k, d_k), compare.rand(gen, n_k, d_v)
        calls.append(compare.call("scaled_dot_product_attention", Q, K, V))
        wants.append(((n_q, n_k, d_k, d_v), torch.softmax(Q @ K.T / math.sqrt(d_k), dim=-1),
                      F.scaled_dot_product_attention(Q[None], K[None], V[None])[0]))

    def check(values):
        for ((n_q, n_k, d_k, d_v), weights, out), got in zip(wants, compare.items("the attention", values, len(wants))):
            if not isinstance(got, list) or len(got) != 2:
                raise AssertionError("return (output, weights)")
            compare.close(f"attention weights for {n_q} queries and {n_k} keys of size {d_k}", got[1], weights)
            compare.close(f"attention output for {n_q} queries and {n_k} keys (values of size {d_v})", got[0], out)
    return _cell_request("q3b", source, ["scaled_dot_product_attention"], calls), check


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
        plain, pruned = compare.items("the objective's studies", values, 2)
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
            if not compare.same(trial["reported"], first):
                raise AssertionError(f"report the first seed's validation accuracy to the pruner after every epoch "
                                     f"({[round(v, 4) for _, v in first]}); got {trial['reported']}")
            seed_values = [value(hidden, s, search["epochs"]) for s in search["seeds"]]
            if not compare.same(trial["user_attrs"].get("seed_values"), seed_values):
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
    if not compare.same(trial["reported"], first):
        raise AssertionError(f"report the first seed's validation accuracy after every epoch until pruned; got "
                             f"{trial['reported']}")
