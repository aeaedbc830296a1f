"""The automatically graded questions of exercise 2: their points, titles and where the student writes them.

One home for the list, read by the grader, its hidden tests, the tests of this repository and the students'
self-check summary (the release ships this file: nothing here is an answer).
"""
NB01 = "notebooks/01_derivatives_backprop_skip_connections.ipynb"
NB02 = "notebooks/02_architectures_and_text_to_image.ipynb"
NB03 = "notebooks/03_rnn_gru_tpe_search.ipynb"

QUESTIONS = {
    "rnn_cell": {"points": 2, "title": "RNN cell: forward step", "where": "ex2/layers.py, RNNCell.update",
                 "replace": ["RNNCell.update"]},
    "gru_cell": {"points": 3, "title": "GRU cell: forward step", "where": "ex2/layers.py, GRUCell.update",
                 "replace": ["GRUCell.update"]},
    "bptt": {"points": 4, "title": "Back-propagation through time, by hand",
             "where": "ex2/layers.py, RNNCell.update_backward and RecurrentBPTT.backward",
             "replace": ["RNNCell.update_backward", "RecurrentBPTT.backward"]},
    "pooling": {"points": 2, "title": "SUM and WEIGHTED: combining sub-scores and weights",
                "where": "ex2/layers.py, pool_token_scores", "replace": ["pool_token_scores"]},
    "attention": {"points": 3, "title": "Restricted self-attention", "where": "ex2/layers.py, SelfAttention.forward",
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
"""Question id -> points, title, where the student writes it, and what is graded: the ex2/layers.py functions of the
submission (`replace`), or a notebook's code cell (`notebook`, the cell's nbgrader `grade_id`)."""

WRITTEN: dict[str, dict] = {}
"""The written answers, graded by hand: grade_id (of the notebook's markdown answer cell) -> {"question": the question
as the notebook asks it, "criteria": [(what a full answer contains, points), ...]}. The criteria's points add up to
the answer cell's nbgrader points; the markdown cell just above the answer cell asks the same question, lists the
criteria and states the points ("(N points)"). The grader's instructor report prints each entry as the rubric beside
the reference answer, with the common mistakes the grader keeps for the marker (the student release leaves those
out, as it does the reference answers)."""

WRITTEN.update({  # notebook 03
    'nb03_s4_results': {
        "question": ("In your gradient-reach figure, how does the logit's dependence on the first words compare with "
                     'its dependence on the last words, for the RNN with frozen vectors and for the GRU (frozen and '
                     'trainable), and what in the backward pass of section 2 explains the difference?'),
        "criteria": [
            ('the ratio t=100 / t=1 from your printout for the frozen RNN and the two GRUs, and which model depends '
             'least on the first words relative to the last', 1),
            ("the mechanism, from section 2's backward pass", 1),
        ],
    },
    'nb03_s5_results': {
        "question": 'Do the 128-unit models over-fit more than the 64-unit ones?',
        "criteria": [
            ('what the table shows for 64 and for 128 units (the train − validation gap, whether the validation '
             'loss rises after its minimum), with trainable and with frozen vectors', 1),
            ("the conclusion about the write-up's claim, and a likely reason", 1),
        ],
    },
    'nb03_s6_results': {
        "question": 'Is the hidden size the search found better than 128 units?',
        "criteria": [
            ("the size the course's search found for each cell, and why a search score is only a proxy", 1),
            ("what the full-recipe table says on validation about the found and the write-up's sizes against 128", 1),
        ],
    },
    'nb03_s7_results': {
        "question": ('What does the test set say about trainable versus frozen word vectors, the GRU versus the RNN, '
                     'and the GRU versus the TF-IDF anchor?'),
        "criteria": [
            ('trainable against frozen vectors for both cells, and the GRU against the RNN, with the test '
             'accuracies of the table', 1),
            ('the GRU against the TF-IDF anchor, and one reason a bag of words does this well on reviews', 1),
        ],
    },
})

WRITTEN.update({  # notebook 04
    'nb04_s4_results': {
        "question": ('In your figures, which models change a word\'s sub-score when *"despite the bad reviews"* is '
                     'put in front, and how does each model keep review 2 positive or fail to?'),
        "criteria": [
            ('`sum` and `weighted`: what happens to the sub-scores of the words the two reviews share, why, and '
             'how each of the two ends up with its P(positive) for review 2', 1),
            ('the attention models: which words change their sub-score, read off the heatmap (which words take '
             'their attention from *bad* and which from *loved*), and what that does to P(positive), with '
             'numbers from your figures', 1),
        ],
    },
    'nb04_s5_results': {
        "question": ('Why must `sum` and `weighted` give both orders of the contrast the same score, and what does '
                     'your `attn_weighted` heatmap of *"this movie is not good"* show about how it handles the '
                     'negation?'),
        "criteria": [
            ('the argument, from how $s_i$, $a_i$ and the logit of `sum` and `weighted` are computed (section 1)', 1),
            ('read off your figure: whether *good* keeps a positive sub-score, which words take their attention '
             'from *not*, and which sub-scores make the review negative (or why your model misses it), with the '
             'P(positive) of your table', 1),
        ],
    },
    'nb04_s6_results': {
        "question": ('Name two kinds of review your models get confidently wrong, with an example of each from your '
                     'output, and say for one of them why a word-score model cannot get it right; quote the '
                     'numbers of the error-rate table that support it.'),
        "criteria": [
            ('two kinds of error, each with a review from your output (e.g. a rating that disagrees with its '
             'words, negative words in a positive review, a mild 4★ or 7★ review, a review whose verdict comes '
             'after its first 100 tokens)', 1),
            ('for one of them, the reason in terms of the model (it scores words, not the verdict; it sees only '
             'the first 100 tokens) and the supporting error rates from the table', 1),
        ],
    },
    'nb04_s7_results': {
        "question": ("From the course's five-seed table: how do the attention models compare with the GRU and with "
                     'TF-IDF, and which model would you choose for this task, and why?'),
        "criteria": [
            ('how `attn_weighted` compares with the GRU and with TF-IDF on test, read off the table, and a choice '
             'argued from accuracy, cost or what the model lets you inspect', 1),
        ],
    },
})

WRITTEN.update({  # notebooks 01 and 02
    'q1a_derivation': {
        "question": ('Let $f:\\mathbb{R}^3\\to\\mathbb{R}^d$ be differentiable. Compute '
                     '$\\dfrac{\\partial}{\\partial x} f(x+y,\\,2x,\\,z)$.'),
        "criteria": [
            ('The multivariate chain rule applied to $f(x+y,\\,2x,\\,z)$, saying at which point the partial '
             'derivatives of $f$ are evaluated', 1),
            ('$\\partial F/\\partial x$ in terms of the partial derivatives of $f$, with the contribution of '
             'each slot that $x$ fills', 1),
        ],
    },
    'q1b_derivation': {
        "question": 'Compute the derivative of $F(x) = f_1(f_2(\\dots f_n(x)))$ and relate it to back-propagation.',
        "criteria": [
            ("The derivative as a product of the layers' Jacobians: in which order, and at which value each factor"
             " is evaluated, and whether the write-up's product has the right indices", 1),
            ('How back-propagation computes this product (in which order, with which products), what it costs for '
             'a scalar loss compared with the other order, and how the same sweep gives the weight gradients', 1),
        ],
    },
    'q1c_answer': {
        "question": 'Which activation would you use inside each $f_i$, and why?',
        "criteria": [
            ("The largest value of $\\sigma'$ and where it is reached, derived, with a verdict on the "
             "write-up's claim; what one such factor per layer does to the gradient through $L$ layers", 1),
            ('Your choice of activation with its reasons, and what the initialisation has to do with it', 1),
        ],
    },
    'q1d_derivation': {
        "question": 'Differentiate $f = f_1\\big(x,\\ f_2(x,\\ f_3(\\dots f_{n-1}(x,\\ f_n(x))))\\big)$.',
        "criteria": [
            ('$df/dx$ as a recursion over the levels, with the point at which each partial derivative is evaluated', 1),
            ('The recursion unrolled as a sum over the paths from $x$ to the output, and how the two entries of '
             "the write-up's nested pairs combine", 1),
        ],
    },
    'q1e_answer': {
        "question": 'Explain the advantage of $f(x + g(x + h(x)))$ over the plain composition $f(g(h(x)))$.',
        "criteria": [
            ("Both derivatives, with the points at which $f'$, $g'$, $h'$ are evaluated, and the residual one "
             'expanded into paths', 1),
            ('The advantage of the skip connections for deep networks (why the residual derivative does not vanish'
             ' with depth when the plain product does), and what they do not guarantee', 1),
        ],
    },
    'q2_answer': {
        "question": ('Which architecture suits each of these tasks, and why: speech recognition, question answering, '
                     'sentiment analysis, image classification, single-word translation?'),
        "criteria": [
            ('For each task, the shape of the mapping (how many inputs and outputs, aligned or not) and a suitable'
             ' architecture with its reason', 2),
            ('For single-word translation, what a table cannot do, and what translates words outside the '
             'dictionary', 1),
        ],
    },
    'q3a_design': {
        "question": 'Design a system that generates an image from a sentence, built from auto-encoders.',
        "criteria": [
            ('The modules (two auto-encoders and what connects their latent spaces), and how an image is generated'
             ' from a sentence', 1),
            ('The training objective: each loss term, on which data (paired or unpaired), and which modules each '
             'term trains', 1),
        ],
    },
    'q3b_answer': {
        "question": ('Add an attention layer that links the words of the description to the quadrants: which are the '
                     "queries, keys and values, and what do the toy's weights show?"),
        "criteria": [
            ('The queries, keys and values of both ways round, which axis the softmax normalises, and which one '
             'gives each word a quadrant', 1),
            ("What the toy's heatmaps and the two-word check show, with numbers", 1),
        ],
    },
})
