"""The hidden tests (grader/cases/), run in this process (the child's `answer` on a folder, then `grade.judge`):
every question has one and the reference passes it, the release's words decide what is right, and a submission
cannot move its own target."""
import ast
import json
import shutil
from pathlib import Path

import pytest
import torch

import helpers
from assignment import make_release
from assignment.questions import QUESTIONS
from ex2 import runtime
from grader import cases, child, grade, wire
from grader.cases import cells

ROOT = runtime.ROOT
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
    request, check = cases.CASES[question](torch.Generator().manual_seed(seed), helpers, source)
    event = child.answer(wire.decode(wire.encode(request)), str(folder))
    return grade.judge(question, json.loads(json.dumps(event)), check)


def case_functions(module: str | None = None) -> set[str]:
    """The questions of the `case_<question>` functions defined in grader/cases/ (in `module`.py only, if given),
    read from the source files."""
    found = set()
    for path in (ROOT / "grader" / "cases").glob(f"{module or '*'}.py"):
        found |= {node.name.removeprefix("case_") for node in ast.parse(path.read_text(encoding="utf-8")).body
                  if isinstance(node, ast.FunctionDef) and node.name.startswith("case_")}
    return found


def test_every_question_has_a_case_and_the_reference_passes_it():
    """Every graded question has its hidden test and every hidden test grades a question of the list (a question
    added without a test, or a test whose question was dropped, is found by the functions' names); the grader uses
    them all, and the reference passes each."""
    found = case_functions()
    assert found == set(QUESTIONS), (f"questions without a case_<question>: {sorted(set(QUESTIONS) - found)}; "
                                     f"cases of no question: {sorted(found - set(QUESTIONS))}")
    assert set(cases.CASES) == set(QUESTIONS), f"cases the grader does not collect: {sorted(found - set(cases.CASES))}"
    for q in QUESTIONS:
        assert judge_in_process(ROOT, q) == {"status": "passed", "message": ""}, q


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
    module = child.load_submission(str(folder))
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
    released, _ = make_release.stub_python((ROOT / "ex2" / "layers.py").read_text(encoding="utf-8"))
    conventions = {  # what the release must say: key terms, read with line breaks and indentation collapsed
        "the RNN's cache is h' (bptt feeds the grader's caches)": ["cache = h'"],
        "the RNN's bypass may be None, 0 or zeros": ["None, 0 or a zero tensor", "accepted"],
        "the GRU's cache is (r, z, n, gh_n)": ["cache = (r, z, n, gh_n)"],
        "the GRU's bypass through z ⊙ h": ["bypasses gh", "z ⊙ h"],
        "update's inputs and shapes": ["x_proj = W_ih x + b_ih", "gh = W_hh h + b_hh", "(B, H)"],
        "pooling's return shapes and None for sum": ["logit (B,)", "s (B, T)", "w (B, T)", "None for sum"],
        "pooling: zero at padding, all-zero w for an empty review": ["s = w = 0", "no real token", "all-zero w"],
        "attention: padding queries are free": ["zero row", "softmax over the row's real keys", "both right"],
        "attention: either mask value": ["−∞", "most negative number", "padding keys"],
        "attention: returns (out, A) with shapes": ["out (B, T, d)", "A (B, T, T)"],
        "BPTT: the backward's recurrence and padding": ["keep False", "h_t = h_{t-1}", "δ passes unchanged"],
    }
    flat = " ".join(released.split())
    missing = {what: [term for term in terms if term not in flat] for what, terms in conventions.items()}
    assert not any(missing.values()), {what: terms for what, terms in missing.items() if terms}


def test_hidden_tests_keep_their_own_targets():
    """A submission cannot move what it is graded against: the given code of a task cell (here `forward`, made
    linear to match a backprop without tanh') comes from the reference; and an objective must train and prune."""
    source = cells.reference_cells(QUESTIONS["q1b"]["notebook"])["q1b_backprop"]
    edited = source.replace("        h = torch.tanh(W @ h + b)\n    return h, inputs",
                            "        h = W @ h + b\n    return h, inputs")
    edited = edited.replace("delta = v * (1 - torch.tanh(W @ h + b) ** 2)", "delta = v")
    assert edited.count("delta = v  #") == 1 and "h = W @ h + b\n    return h, inputs" in edited

    def run(question, source):
        request, check = cases.CASES[question](torch.Generator().manual_seed(0), helpers, source)
        return grade.judge(question, child.answer(wire.decode(wire.encode(request)), str(ROOT)), check)

    assert run("q1b", source)["status"] == "passed"
    assert "backprop on a chain" in run("q1b", edited)["message"]
    objective = cells.reference_cells(QUESTIONS["objective"]["notebook"])["q6_objective"]
    assert run("objective", objective)["status"] == "passed"
    suggest = 'hidden = trial.suggest_int("hidden", SEARCH["low"], SEARCH["high"])'
    for wrong in ("return 0.6", "return 0.5 + hidden / 1000"):  # never trains
        message = run("objective", objective.replace(suggest, f"{suggest}; {wrong}"))["message"]
        assert "train the trial's hidden size" in message
    assert "report the first seed's validation accuracy" in run("objective", objective.replace(
        "trial.report(history.val_acc[-1], epoch)", "pass"))["message"]
    assert "raise optuna.TrialPruned" in run("objective", objective.replace("trial.should_prune()", "False"))["message"]
    no_reuse = objective.replace('old.user_attrs.get("repeat_of") is None', "False")
    assert "without training it again" in run("objective", no_reuse)["message"]
