"""What the marker looks out for in each written answer: grade_id -> the common mistakes, printed by the grader's
instructor report beside the rubric of assignment/questions.py's WRITTEN and the reference answer. Instructors only:
it is part of the grader, which the student release leaves out."""

MISTAKES: dict[str, list[str]] = {
    'nb03_s4_results': [
        'reading the log axis as linear',
        'explaining it by the number of parameters',
        'blaming the frozen vectors themselves rather than what they let training do',
    ],
    'nb03_s5_results': [
        "reading a tie as 'no difference exists' rather than 'none detectable on five seeds'",
        'comparing the best validation accuracy only',
    ],
    'nb03_s6_results': [
        "reading the search's best score as proof that its size is better",
        'deciding on the test columns',
    ],
    'nb03_s7_results': [
        'calling the GRU worse than TF-IDF although the verdict is suggestive',
        'forgetting that the test set decided nothing',
    ],
    'nb04_s4_results': [
        "describing the course's figure instead of your own",
        "saying that `weighted` changes a word's sub-score (only its weight's share changes, through the softmax over "
        "more words)",
        'reading a column of the heatmap as a row (row i is where word i looks)',
    ],
    'nb04_s5_results': [
        "saying that the order matters to `sum` or `weighted` 'a little'",
        'claiming that *good* turns negative without checking its bar',
        'concluding from one probe that attention understands negation',
    ],
    'nb04_s6_results': [
        'listing reviews without saying why a word-score model gets them wrong',
        'quoting error rates that are not in the table',
        'blaming the labels for every error',
    ],
    'nb04_s7_results': [
        'calling the GRU better than `attn_weighted` although the interval includes 0',
        'choosing a model on the test set alone',
        "taking the course's five-seed table for the student's own run",
    ],
    'q1a_derivation': [
        'evaluating the partial derivatives at the wrong point',
        'dropping the inner derivative of a slot',
        'combining the contributions of the slots the wrong way',
    ],
    'q1b_derivation': [
        'evaluating every factor at the same point',
        'the factors in the wrong order for vector-valued layers',
        'naming the chain rule without the order of the products and its cost',
    ],
    'q1c_answer': [
        "repeating the write-up's value of the sigmoid's derivative at 0 without checking it",
        'an activation chosen without a word on the initialisation',
        'claiming that an activation keeps the gradient unchanged through depth without the measurement',
    ],
    'q1d_derivation': [
        'keeping only one path',
        'combining the entries of a pair the wrong way',
        'the matrix factors in the wrong order',
    ],
    'q1e_answer': [
        'a comparison of the two derivatives that assumes the same local derivatives in both',
        'comparing the two derivatives only at one depth',
        'claiming that a skip connection makes the gradient exactly 1',
    ],
    'q2_answer': [
        'invariance claimed without saying where it comes from',
        'a sequence model where no sequence is modelled',
        'ignoring whether input and output are aligned',
    ],
    'q3a_design': [
        'letting every loss term train every module without saying what that does',
        'training everything on the paired data only',
        'a mapping between the latent spaces with no data to train it on',
    ],
    'q3b_answer': [
        'a read-out that does not match the axis of the softmax',
        'queries and keys swapped without saying what the softmax then normalises over',
        'numbers from the toy without saying which variant they come from',
    ],
}
