"""The automatically graded questions of exercise 2: their points, titles and where the student writes them.

One home for the list, read by the grader (tools/grade.py), its hidden tests, the tests of this repository and the
students' self-check summary (tools/self_check_summary.py in the release, which ships this file: nothing here is
an answer).
"""
NB01 = "notebooks/01_derivatives_backprop_skip_connections.ipynb"
NB02 = "notebooks/02_architectures_and_text_to_image.ipynb"
NB03 = "notebooks/03_rnn_gru_tpe_search.ipynb"

QUESTIONS = {
    "rnn_cell": {"points": 2, "title": "RNN cell: forward step", "where": "helpers.py, RNNCell.update",
                 "replace": ["RNNCell.update"]},
    "gru_cell": {"points": 3, "title": "GRU cell: forward step", "where": "helpers.py, GRUCell.update",
                 "replace": ["GRUCell.update"]},
    "bptt": {"points": 4, "title": "Back-propagation through time, by hand",
             "where": "helpers.py, RNNCell/GRUCell.update_backward and RecurrentBPTT.backward",
             "replace": ["RNNCell.update_backward", "GRUCell.update_backward", "RecurrentBPTT.backward"]},
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
"""Question id -> points, title, where the student writes it, and what is graded: the helpers.py functions of the
submission (`replace`), or a notebook's code cell (`notebook`, the cell's nbgrader `grade_id`)."""

WRITTEN: dict[str, dict] = {}
"""The written answers, graded by hand: grade_id (of the notebook's markdown answer cell) -> {"question": the question
as the notebook asks it, "criteria": [(what a full answer contains, points), ...], "mistakes": [a common mistake,
...]}. The criteria's points add up to the answer cell's nbgrader points; the markdown cell just above the answer
cell asks the same question, lists the criteria and states the points ("(N points)"). The grader's instructor report
prints each entry as the rubric beside the reference answer."""
