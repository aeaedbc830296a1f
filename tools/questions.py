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

WRITTEN.update({  # notebook 03
    'nb03_s0_results': {
        "question": "Why is the validation split held out by film rather than at random, and which input definition did the course's full run choose, on which split?",
        "criteria": [('why a random hold-out over-rates a model, with the fractions the rare-word measurement printed', 1), ("the chosen definition, its margin on validation in the course's table, and why test plays no part", 1)],
        "mistakes": ['choosing the tokenizer by its test accuracy', "calling the film-disjoint split harder 'because it is smaller'", 'quoting the margin without saying it is on validation']},
    'nb03_s3_results': {
        "question": "How many trainable numbers do the word-vector corrections add, compared with the recurrent models' own parameters, and what does min_count trade off?",
        "criteria": [("the counts from the printout, their ratio to the RNN's and GRU's own parameters, and what a lower or higher `min_count` gains and loses", 1)],
        "mistakes": ['counting the 400,000-word GloVe table as trainable', 'saying the corrections start random (they start at 0, i.e. at GloVe)']},
    'nb03_s4_results': {
        "question": "In your gradient-reach figure, how does the logit's dependence on the first words compare with its dependence on the last words, for the RNN with frozen vectors and for the GRU, and what in the backward pass of section 2 explains the difference?",
        "criteria": [('the ratio t=100 / t=1 from your printout for the frozen RNN and the GRU, and which curve falls most', 1), ("the mechanism, from section 2's backward pass", 1)],
        "mistakes": ['reading the log axis as linear', 'explaining it by the number of parameters', 'blaming the frozen vectors themselves rather than what they let training do']},
    'nb03_s5_results': {
        "question": 'Do the 128-unit models over-fit more than the 64-unit ones?',
        "criteria": [('what the table shows (train − validation gap, validation loss after its minimum) and the 128 − 64 verdicts, with trainable and with frozen vectors', 1), ("the conclusion about the write-up's claim, and a likely reason", 1)],
        "mistakes": ["reading a tie as 'no difference exists' rather than 'none detectable on five seeds'", 'comparing the best validation accuracy only']},
    'nb03_s6_results': {
        "question": 'Is the hidden size the search found better than 128 units?',
        "criteria": [('the size each search found, and why a search score is only a proxy', 1), ("what the full-recipe table says on validation about the found and the write-up's sizes against 128", 1)],
        "mistakes": ["reading the search's best score as proof that its size is better", 'deciding on the test columns']},
    'nb03_s7_results': {
        "question": 'What does the test set say about trainable versus frozen word vectors, the GRU versus the RNN, and the GRU versus the TF-IDF anchor?',
        "criteria": [('trainable − frozen for both cells, with verdicts, and why the RNN gains far more', 1), ('the GRU against the RNN and against the anchor, with verdicts, and what a suggestive verdict allows one to say', 1)],
        "mistakes": ['calling the GRU worse than TF-IDF although the verdict is suggestive', 'forgetting that the test set decided nothing']},
    'nb03_s7_results_3': {
        "question": "Read your GRU's running prediction for the two reviews above: at which words does P(positive) move most, and does each review end on the right side of 0.5?",
        "criteria": [('where your GRU\'s prediction turns, where each review ends, and why one review cannot show that the GRU understands "but"', 1)],
        "mistakes": ["describing the course's figure instead of your own", 'concluding from one review that the GRU understands negation or contrast']},
    'nb03_summary': {
        "question": "What does this notebook conclude about the write-up's two claims, that 128 hidden units over-fit and that TPE's 86 / 107 units are the sizes to use, and what changed the accuracy most?",
        "criteria": [('the over-fitting claim, with the evidence of section 5', 1), ('the sizes, with the evidence of section 6, and what changed the accuracy far more', 1)],
        "mistakes": ["restating the write-up's claims without the evidence", "citing the search's proxy scores as the result"]},
})
