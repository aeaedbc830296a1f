"""The trusted grader (tools/grade.py, sandbox.py, harness.py, hidden_tests.py): what a submission returns is data the
grader checks, the child never sees the reference, the release's words decide what is right, and a submission that
attacks the grader loses what it attacks and nothing else, with the machine and its own folder unharmed.

The fast tests run the hidden tests in this process (harness.answer on a folder, then grade.judge); the `slow` ones
grade real submissions through the command line, in the sandbox."""
import base64
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import helpers

ROOT = helpers.ROOT
from tools import grade, harness, hidden_tests, make_assignment, sandbox
from tools.questions import QUESTIONS

HELPERS_QUESTIONS = [q for q, spec in QUESTIONS.items() if "replace" in spec]


def variant(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    """A folder with the reference ex2/layers.py (and notebooks), `edits` applied as (old, new) to ex2/layers.py."""
    folder = tmp_path / "variant"
    folder.mkdir(exist_ok=True)
    shutil.copytree(ROOT / "notebooks", folder / "notebooks", ignore=shutil.ignore_patterns("*.py", "figures"),
                    dirs_exist_ok=True)
    text = (ROOT / "ex2" / "layers.py").read_text(encoding="utf-8")
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (folder / "ex2").mkdir(exist_ok=True)
    (folder / "ex2" / "layers.py").write_text(text, encoding="utf-8")
    return folder


def judge_in_process(folder: Path, question: str, seed: int = 0) -> dict:
    """One question graded without a sandbox (trusted test code): the request through the wire format both ways."""
    source = grade._cell_source(folder, question) if "cell" in QUESTIONS[question] else None
    request, check = hidden_tests.CASES[question](torch.Generator().manual_seed(seed), helpers, source)
    event = harness.answer(harness.decode(harness.encode(request)), str(folder))
    return grade.judge(question, json.loads(json.dumps(event)), check)


def test_every_question_has_a_case_and_the_reference_passes_it():
    assert set(hidden_tests.CASES) == set(QUESTIONS)
    for q in QUESTIONS:
        assert judge_in_process(ROOT, q) == {"status": "passed", "message": ""}, q


# --- the release's words decide: what it leaves open, the grader accepts either way ---

PADDING_QUERIES_ATTEND = ("allowed = mask[:, None, :] & mask[:, :, None]  # real queries attend to real keys only",
                          "allowed = mask[:, None, :].expand(-1, T, -1)  # every query attends to the real keys")
MINUS_INF = ("scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)",
             "scores = scores.masked_fill(~allowed, float('-inf'))")
MINUS_INF_MASK = ("attn = torch.softmax(scores, dim=-1) * allowed  # rows of padding queries become all zero",
                  "attn = torch.softmax(scores, dim=-1)")


@pytest.mark.parametrize("edits", [[PADDING_QUERIES_ATTEND], [PADDING_QUERIES_ATTEND, MINUS_INF, MINUS_INF_MASK]],
                         ids=["padding queries attend to the real keys", "and the mask is -inf"])
def test_attention_rows_of_padding_queries_are_free(tmp_path, edits):
    """Padding positions never reach the logit, so their rows may be zero or a softmax over the real keys (the
    release's docstring says both are right); the real queries' rows are checked as before."""
    folder = variant(tmp_path, *edits)
    layer = helpers.SelfAttention(4, window=2)
    module = harness.load_submission(str(folder))
    layer.forward = module.SelfAttention.forward.__get__(layer)
    _, attn = layer(torch.randn(1, 4, 4), torch.tensor([[True, True, False, False]]))
    assert attn[0, 3, :2].sum() > 0.99, "the variant must really give padding queries a row over the real keys"
    assert judge_in_process(folder, "attention")["status"] == "passed"


@pytest.mark.parametrize("bypass", ["None", "0", "torch.zeros_like(h)", "0.0"])
def test_the_rnn_bypass_may_be_none_zero_or_zeros(tmp_path, bypass):
    folder = variant(tmp_path, ("        return d_pre, d_pre, 0.0\n", f"        return d_pre, d_pre, {bypass}\n"),
                     ("dh = dh * (1 - m) + direct + d_gh[t] @ w_hh",
                      "dh = dh * (1 - m) + (0 if direct is None else direct) + d_gh[t] @ w_hh"))
    assert judge_in_process(folder, "bptt")["status"] == "passed"


@pytest.mark.parametrize("question, old, new, message", [
    ("attention", "/ math.sqrt(x.shape[-1])", "", "attention weights of the real queries"),
    ("attention", "scores = (q @ k.transpose(1, 2) + rel)", "scores = (q @ k.transpose(1, 2))",
     "relative positions (the term R)"),  # the relative term left out: only the relative case fails
    ("attention", "allowed = mask[:, None, :] & mask[:, :, None]", "allowed = mask[:, :, None].expand(-1, -1, T)",
     "attention weights of the real queries"),  # padding keys attended
    ("bptt", "return d_pre, d_pre, 0.0", "return d_pre, d_pre, torch.ones_like(h)", "bypasses gh"),
    ("rnn_cell", "return h_new, h_new", "return 0.5 * h_new, h_new", "against torch.nn.RNNCell"),
    ("pooling", "return scores.sum(-1), scores, None", "return scores.sum(-1), scores, torch.ones_like(scores)",
     "third value must be None"),
])
def test_what_the_release_states_is_still_checked(tmp_path, question, old, new, message):
    result = judge_in_process(variant(tmp_path, (old, new)), question)
    assert result["status"] == "failed" and message in result["message"], result


def test_the_release_states_every_convention_the_hidden_tests_check():
    """Each convention a hidden test relies on is written in the release's own ex2/layers.py (the docstrings stay
    when the solution regions are stubbed)."""
    released, _ = make_assignment.stub_python((ROOT / "ex2" / "layers.py").read_text(encoding="utf-8"))
    conventions = {
        "the RNN's cache is h' (bptt feeds the grader's caches)": "cache = h' itself",
        "the RNN's bypass may be None, 0 or zeros": "return None, 0 or a\n        zero tensor (all three are accepted",
        "the GRU's cache is (r, z, n, gh_n)": "cache = (r, z, n, gh_n)",
        "the GRU's bypass through z ⊙ h": "the part of ∂L/∂h that bypasses gh (through z ⊙ h)",
        "update's inputs and shapes": "x_proj = W_ih x + b_ih and gh = W_hh h + b_hh, each (B, H)",
        "pooling's return shapes and None for sum": "Returns (logit (B,), s (B, T),\n    w (B, T) for weighted, None for sum)",
        "pooling: zero at padding, all-zero w for an empty review": "padding gets s = w = 0, and a review with no real token all-zero w",
        "attention: padding queries are free": "a zero row, or the softmax over the row's real keys,\n    are both right",
        "attention: either mask value": "M is −∞ (or the dtype's most negative number) at padding keys",
        "attention: returns (out, A) with shapes": "returns (out (B, T, d), A (B, T, T))",
        "BPTT: the backward's recurrence and padding": "at padding (keep False) h_t = h_{t-1}, so δ passes unchanged",
    }
    missing = [what for what, phrase in conventions.items() if phrase not in released]
    assert not missing, missing


# --- values, not verdicts ---

def test_a_verdict_from_the_child_counts_for_nothing():
    _, check = hidden_tests.case_q1a(torch.Generator().manual_seed(0), helpers, "")
    for event in ({"question": "q1a", "status": "passed", "message": ""}, {"question": "q1a", "passed": True},
                  {"question": "q1a", "values": [1.0, 2.0, 3.0]}, {"question": "q1a", "values": {"$npy": "AAAA"}}):
        assert grade.judge("q1a", event, check)["status"] != "passed", event


def test_the_wire_refuses_what_is_not_numbers():
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)  # a pickle inside an .npy
    with pytest.raises(harness.WireError, match="unreadable|numbers only"):
        harness.decode({"$npy": base64.b64encode(buffer.getvalue()).decode()})
    with pytest.raises(harness.WireError, match="at most"):
        harness.decode(harness.encode(np.zeros(11)), max_elements=10)
    with pytest.raises(harness.WireError):
        harness.decode({"$npy": 3})
    value = harness.decode(harness.encode([torch.ones(2, dtype=torch.float32), None, (1, "x")]))
    assert value[0].dtype == np.float64 and value[1:] == [None, [1, "x"]]


def test_hidden_tests_keep_their_own_targets():
    """A submission cannot move what it is graded against: the given code of a task cell (here `forward`, made
    linear to match a backprop without tanh') comes from the reference; and an objective must train and prune."""
    source = hidden_tests.graded_cells(ROOT / QUESTIONS["q1b"]["notebook"])["q1b_backprop"]
    edited = source.replace("        h = torch.tanh(W @ h + b)\n    return h, inputs", "        h = W @ h + b\n    return h, inputs")
    edited = edited.replace("delta = v * (1 - torch.tanh(W @ h + b) ** 2)", "delta = v")
    assert edited.count("delta = v  #") == 1 and "h = W @ h + b\n    return h, inputs" in edited

    def run(question, source):
        request, check = hidden_tests.CASES[question](torch.Generator().manual_seed(0), helpers, source)
        return grade.judge(question, harness.answer(harness.decode(harness.encode(request)), str(ROOT)), check)

    assert run("q1b", source)["status"] == "passed"
    assert "backprop on a chain" in run("q1b", edited)["message"]
    objective = hidden_tests.graded_cells(ROOT / QUESTIONS["objective"]["notebook"])["q6_objective"]
    assert run("objective", objective)["status"] == "passed"
    suggest = 'hidden = trial.suggest_int("hidden", SEARCH["low"], SEARCH["high"])'
    for wrong in ("return 0.6", "return 0.5 + hidden / 1000"):  # never trains
        assert "train the trial's hidden size" in run("objective", objective.replace(suggest, f"{suggest}; {wrong}"))["message"]
    assert "report the first seed's validation accuracy" in run("objective", objective.replace(
        "trial.report(history.val_acc[-1], epoch)", "pass"))["message"]
    assert "raise optuna.TrialPruned" in run("objective", objective.replace("trial.should_prune()", "False"))["message"]
    no_reuse = objective.replace('old.user_attrs.get("repeat_of") is None', "False")
    assert "without training it again" in run("objective", no_reuse)["message"]


# --- the sandbox ---

@pytest.fixture(scope="module")
def box():
    try:
        return sandbox.find()
    except sandbox.SandboxUnavailable as exc:
        pytest.skip(f"no sandbox on this machine: {exc}")


def test_the_child_sees_neither_the_reference_nor_the_network(box, tmp_path):
    probe = ("import os, socket, sys\n"
             "print('uid', os.getuid())\n"
             "for p in sys.argv[1:]:\n"
             "    print(p, os.path.exists(p))\n"
             "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2); print('network yes')\n"
             "except OSError:\n    print('network no')\n")
    secrets = [ROOT / "tools" / "hidden_tests.py", ROOT / "ex2" / "layers.py", tmp_path]
    done = subprocess.run(box.command([sys.executable, "-I", "-c", probe, *map(str, secrets)], read_only={}),
                          capture_output=True, text=True, timeout=60, preexec_fn=box.limits.apply)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[-1] for line in lines[1:]] == ["False"] * 3 + ["no"], lines
    assert int(lines[0].split()[1]) != 0, "the child must not run as root"


def test_without_a_sandbox_the_grader_refuses_and_names_the_fix(tmp_path):
    """`--sandbox user` cannot work here (this machine's Python is not readable by another user, or the grader is
    not root): the grader refuses rather than run the submission unprotected."""
    done = subprocess.run([sys.executable, "-m", "tools.grade", str(tmp_path), "--out", str(tmp_path / "g"),
                           "--sandbox", "user"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if done.returncode == 0:
        pytest.skip("this machine can run the 'user' sandbox")
    assert done.returncode == 2 and "bubblewrap" in done.stderr and "--no-sandbox" in done.stderr, done.stderr
    assert not (tmp_path / "g").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="sandbox users are reserved as root only (otherwise the child is the caller)")
def test_two_graders_at_once_never_share_a_sandbox_user():
    """Each grader holds its sandbox users by a lock until it ends, so one grader's clean-up (kill every process of
    its user) cannot kill another's children; a grader that ends gives its users back."""
    hold = ("import sys, time; sys.path.insert(0, sys.argv[1]); from tools import sandbox\n"
            "print(*sandbox.reserve_slots(int(sys.argv[2])), flush=True); time.sleep(30)\n")
    first = subprocess.Popen([sys.executable, "-c", hold, str(ROOT), "2"], stdout=subprocess.PIPE, text=True)
    try:
        taken = set(map(int, first.stdout.readline().split()))
        second = subprocess.run([sys.executable, "-c", hold.replace("time.sleep(30)", "pass"), str(ROOT), "3"],
                                capture_output=True, text=True, timeout=60)
        assert len(taken) == 2 and not taken & set(map(int, second.stdout.split())), (taken, second.stdout)
    finally:
        first.kill()
        first.wait()
    again = subprocess.run([sys.executable, "-c", hold.replace("time.sleep(30)", "pass"), str(ROOT), "2"],
                           capture_output=True, text=True, timeout=60)
    assert taken & set(map(int, again.stdout.split())), "the users of a grader that ended are free again"
