"""The grading child: runs a submission's code on the grader's inputs and sends back the values it computes.

    python -I child.py SUBMISSION_DIR FD < request.json        # values to file descriptor FD
    python -I child.py --notebook PATH FD SECONDS              # execute a notebook, say where it stopped

It runs inside the sandbox (sandbox.py), beside the submission's files and copies of this file, wire.py,
untrusted.py and notebooks.py only: it holds no solution, no hidden test and no expected value, and what it sends
back decides nothing. The grader (grade.py) writes a request, one entry per question with the inputs it chose; this
child imports the submission's `ex2/layers.py` (or executes a notebook cell's source that the grader read from the
`.ipynb`), calls the named functions on those inputs and writes, to file descriptor FD (a file the grader opened),
one JSON line per event: `{"start": id}`, then `{"question": id, "values": ...}` or `{"question": id, "error":
"Type: message"}`, the values in the wire format (wire.py). The grader compares the values with its own; an error
only explains a zero.
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import shutil
import sys
import traceback
import types

import numpy as np

if __package__:  # the grader's own tests: grader.child
    from grader import notebooks, wire
else:  # run as a script in the sandbox, beside copies of wire.py, untrusted.py and notebooks.py
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import wire

    import notebooks
    del sys.path[0]

STUDENT_FILE = os.path.join("ex2", "layers.py")
"""The submission's file this child imports: what the student writes."""


def load_submission(folder: str, counter=itertools.count()):
    """The submission's ex2/layers.py, imported afresh (its module-level code runs again for each question)."""
    path = os.path.join(folder, STUDENT_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError("no ex2/layers.py in the submission")
    spec = importlib.util.spec_from_file_location(f"layers_{next(counter)}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise SyntaxError(f"ex2/layers.py has a syntax error (line {exc.lineno}: {exc.msg})") from None
    return module


def resolve(owner, dotted: str):
    """`owner.A.b` for dotted = "A.b" (a class's staticmethod comes back as its function)."""
    for part in dotted.split("."):
        if not hasattr(owner, part):
            raise AttributeError(f"ex2/layers.py has no {dotted}")
        owner = getattr(owner, part)
    return owner


def tensors(tree, torch, dtype=None):
    """The request's arrays as torch tensors (floats in `dtype`), tuples kept as lists."""
    if isinstance(tree, np.ndarray):
        t = torch.from_numpy(tree)
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t
    if isinstance(tree, list):
        return [tensors(v, torch, dtype) for v in tree]
    if isinstance(tree, dict):
        return {k: tensors(v, torch, dtype) for k, v in tree.items()}
    return tree


def run_call(call: dict, module, torch):
    """One call of the request on `module` (the submission's ex2/layers.py, or a notebook cell's namespace)."""
    dtype = getattr(torch, call.get("dtype", "float64"))
    args = tensors(call.get("args", []), torch, dtype)
    op = call.get("op", "call")
    with torch.no_grad():
        if op == "call":
            return resolve(module, call["target"])(*args)
        if op == "attention":
            return attention(module, call, args, torch, dtype)
        if op == "bptt_backward":
            return bptt_backward(module, call, args, torch)
        if op == "unroll":
            return unroll(module, call, args, torch)
    raise ValueError(f"unknown operation {op!r}")


def attention(module, call, args, torch, dtype):
    """A SelfAttention of the submission's class with the grader's weights, applied to (x, mask)."""
    extra = {"relative": True} if call.get("relative") else {}
    layer = module.SelfAttention(call["dim"], window=call["window"], residual=call["residual"],
                                 positions=call["positions"], **extra).to(dtype)
    x, mask, weights = args
    for name in ("q", "k", "v"):
        getattr(layer, name).weight.copy_(weights[name + "_weight"])
        getattr(layer, name).bias.copy_(weights[name + "_bias"])
    if extra:
        layer.relative.code.copy_(weights["relative_code"])
    return layer(x, mask.bool())


def bptt_backward(module, call, args, torch):
    """The submission's `RecurrentBPTT.backward` on the grader's forward pass: `ctx` holds the per-step caches
    and previous states the grader computed (the cache convention is in `update`'s docstring)."""
    caches, h_prev, w_hh, keep, grad_h = args
    cell = resolve(module, call["cell"])
    ctx = types.SimpleNamespace(cell=cell, caches=[c if isinstance(c, torch.Tensor) else tuple(c) for c in caches],
                                h_prev=list(h_prev), saved_tensors=(w_hh, keep.bool()), needs_input_grad=(False,) * 6)
    backward = resolve(module, call.get("function", "RecurrentBPTT.backward"))
    return list(backward(ctx, grad_h))


def unroll(module, call, args, torch):
    """Final states of a cell run over padded reviews with the submission's `update` (a plain loop written here,
    no solution): x_t = table[ids_t], h_t = update(W_ih x_t + b_ih, W_hh h_{t-1} + b_hh, h_{t-1}) at real tokens."""
    table, ids, lengths, w_ih, b_ih, w_hh, b_hh = args
    update = resolve(module, call["cell"] + ".update")
    x_proj = torch.nn.functional.embedding(ids, table) @ w_ih.T + b_ih
    h = x_proj.new_zeros(ids.shape[0], w_hh.shape[1])
    for t in range(ids.shape[1]):
        h_new = update(x_proj[:, t], torch.addmm(b_hh, h, w_hh.T), h)[0]
        h = torch.where((t < lengths)[:, None], h_new, h)
    return h


def run_cell_question(question: dict, torch):
    """Execute a notebook cell's source (as the grader read it from the .ipynb), then its calls."""
    import torch.nn.functional as F_nn

    before = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, question.get("default_dtype", "float32")))
    try:
        namespace = {"torch": torch, "math": math, "F_nn": F_nn, "np": np}
        if question.get("objective"):
            return objective(question, namespace)
        exec(compile(question["source"], question["cell"], "exec"), namespace)
        missing = [f for f in question["needs"] if not callable(namespace.get(f))]
        if missing:
            raise NameError(f"the cell must define {', '.join(missing)}")
        return [run_call(call, types.SimpleNamespace(**namespace), torch) for call in question["calls"]]
    finally:
        torch.set_default_dtype(before)


class StandInHistory:
    """helpers.History's part that the objective reads: val_acc, best_val_acc, as_dict()."""

    def __init__(self):
        self.val_acc = []

    @property
    def best_val_acc(self):
        return max(self.val_acc) if self.val_acc else float("nan")

    def as_dict(self):
        return {"val_acc": list(self.val_acc)}


def objective(question: dict, namespace: dict):
    """Run the submission's `make_objective` in the studies the grader describes, training replaced by a stand-in
    whose validation curve is the grader's made-up one; send back every trial and every training call."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    a, b, c, base = question["curve"]
    calls = []

    def train_model(name, data, seed=0, config=None, callback=None, progress=True, verbose=True, **settings):
        hidden = (config or {}).get("hidden")
        calls.append({"name": name, "data_is_search_data": data is namespace["search_data"], "seed": seed,
                      "hidden": hidden, "epochs": settings.get("epochs"), "callback": callback is not None})
        history = StandInHistory()
        for epoch in range(1, (settings.get("epochs") or 1) + 1):
            history.val_acc.append(base + a * (hidden or 0) + b * seed + c * epoch)
            if callback is not None:
                callback(epoch, history)
        return None, history

    stand_in = types.SimpleNamespace(recipe=lambda name, trainable=True: ({}, dict(question["settings"])),
                                     History=StandInHistory, train_model=train_model)
    namespace.update(helpers=stand_in, optuna=optuna, TrialState=TrialState, SEARCH=dict(question["search"]),
                     search_data=object())
    exec(compile(question["source"], question["cell"], "exec"), namespace)
    if not callable(namespace.get("make_objective")):
        raise NameError("the cell must define make_objective")
    return [_study(optuna, plan, namespace, calls) for plan in question["studies"]]


def _study(optuna, plan: dict, namespace: dict, calls: list) -> list[dict]:
    """One study the grader describes, run trial by trial with the cell's objective: each trial's state, values,
    reports and attributes, and the training calls it made (`calls`, filled by the stand-in trainer)."""
    prune_at = plan.get("prune_at")
    pruner = _PruneAt(prune_at) if prune_at else optuna.pruners.NopPruner()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=plan["seed"]),
                                pruner=pruner)
    trials = []
    for n in range(plan["n_trials"] + (1 if plan.get("repeat_first") else 0)):
        if n == plan["n_trials"]:
            study.enqueue_trial({"hidden": study.trials[0].params["hidden"]})
        calls.clear()
        study.optimize(namespace["make_objective"](plan["cell"], study), n_trials=1, catch=())
        t = study.trials[-1]
        trials.append({"number": t.number, "state": t.state.name, "params": dict(t.params), "value": t.value,
                       "reported": [[int(k), float(v)] for k, v in sorted(t.intermediate_values.items())],
                       "user_attrs": _plain(t.user_attrs), "calls": [dict(c) for c in calls]})
    return trials


class _PruneAt:
    """A pruner that prunes every trial once it has reported step `step` (so pruning is certain)."""

    def __init__(self, step: int):
        self.step = step

    def prune(self, study, trial) -> bool:
        return bool(trial.intermediate_values) and max(trial.intermediate_values) >= self.step


def _plain(value):
    """User attributes as JSON's own types (anything else becomes its repr)."""
    try:
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError):
        return repr(value)[:200]


def describe(exc: BaseException) -> str:
    """'Type: first line (ex2/layers.py line N)' for the feedback."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(STUDENT_FILE)
              or f.filename.startswith("q")]
    mine = frames and frames[-1].filename.endswith(STUDENT_FILE)
    where = f" (ex2/layers.py line {frames[-1].lineno})" if mine else ""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:400] if text else ''}{where}"


def notebook(path: str, channel, timeout: float) -> None:
    """Execute a submitted notebook (feedback without points) and send where it stopped, if it did."""
    _, seconds, error = notebooks.run_notebook(path, timeout)
    channel.write(json.dumps({"notebook": "error" if error else "ran", "message": error or "",
                              "seconds": round(seconds, 1)}) + "\n")
    channel.flush()


def main(argv=None) -> int:
    """child.py SUBMISSION FD < request  |  child.py --notebook PATH FD TIMEOUT"""
    argv = list(argv or sys.argv[1:])
    channel = os.fdopen(int(argv[-1] if argv[0] != "--notebook" else argv[2]), "w", encoding="utf-8", closefd=False)
    if argv[0] == "--notebook":
        notebook(argv[1], channel, float(argv[3]))
        return 0
    submission = argv[0]
    sys.stdin.reconfigure(encoding="utf-8")
    request = wire.decode(json.load(sys.stdin))
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, submission)  # an import inside a cell finds the submission's own files first

    def send(event: dict) -> None:
        channel.write(json.dumps(event) + "\n")
        channel.flush()

    for question in request["questions"]:
        send({"start": question["id"]})
        send(answer(question, submission))
        reap()
    return 0


def reap() -> None:
    """Kill what a question's code left running (forked children hold the sandbox's process limit), sparing this
    process and the ones it runs under."""
    if os.environ.get("GRADER_SANDBOX") not in ("bwrap", "user"):
        return  # not in a sandbox of its own (--no-sandbox): every process of this user is someone else's
    keep, pid = set(), os.getpid()
    while pid > 1:
        keep.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    private = [os.environ.get("HOME", "")] if os.environ.get("GRADER_SANDBOX") == "user" else []
    if os.environ.get("GRADER_SANDBOX") == "bwrap" or os.environ.get("GRADER_PRIVATE_TMP") == "1":
        private.append("/tmp")
    for folder in filter(os.path.isdir, private):  # its own /tmp and HOME: emptied for the next question
        for entry in os.listdir(folder):
            path = os.path.join(folder, entry)
            try:
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
            except OSError:
                pass
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) > 1 and int(entry) not in keep:
            try:
                if os.stat(f"/proc/{entry}").st_uid == os.getuid():
                    os.kill(int(entry), 9)
            except OSError:
                pass


def answer(question: dict, submission: str) -> dict:
    """The event that answers one (decoded) request: the values computed, or the error that stopped them."""
    import torch

    try:
        if question["kind"] == "cell":
            values = run_cell_question(question, torch)
        else:
            module = load_submission(submission)
            values = [run_call(call, module, torch) for call in question["calls"]]
        return {"question": question["id"], "values": wire.encode(values)}
    except BaseException as exc:  # noqa: BLE001 - a student's code may raise anything, SystemExit included
        return {"question": question["id"], "error": describe(exc), "missing": isinstance(exc, NotImplementedError)}


if __name__ == "__main__":
    sys.exit(main())
