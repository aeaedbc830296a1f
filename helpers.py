"""The models and the data of exercise 2, as the notebooks use them: `import helpers`, then `helpers.load_imdb()`,
`helpers.make_model("gru")`, `helpers.train(...)`, `helpers.explain(model, text)`.

This module only gathers names; each is defined in one module of the package `ex2` beside it:
- `ex2/layers.py`: what a student writes (the RNN and GRU cells and their backward, back-propagation through
  time, the SUM / WEIGHTED pooling, restricted self-attention), torch only;
- `ex2/data.py`: IMDB, the tokenizers, GloVe, the validation split, the cache and the batches;
- `ex2/models.py`: the named models and their configs; `ex2/training.py`: training, evaluation, prediction,
  explanation and the recipes; `ex2/checkpoints.py`: saving and loading trained models;
- `ex2/runtime.py`: the folders, the run mode (`RunMode`), seeds, the device and atomic writes.
Two modules beside it import it (it never imports them): `experiments` (what notebooks 03 and 04 report) and `plots`
(figures and display). Importing this module has no side effects.
"""
from ex2.data import (
    TOKENIZER_VERSION,
    TOKENIZERS,
    course_tokenize,
    find_imdb,
    load_imdb,
    read_imdb,
    stratified_sample,
    tokenize,
    validation_split,
)
from ex2.layers import (
    GRUCell,
    RecurrentBPTT,
    RelativePositions,
    RNNCell,
    SelfAttention,
    lengths_to_mask,
    pool_token_scores,
    run_cell,
)
from ex2.models import (
    MODEL_NAMES,
    SentimentModel,
    TokenScoreClassifier,
    count_parameters,
    make_model,
    training_vocabulary,
)
from ex2.runtime import (
    RUN_MODES,
    RunMode,
    get_device,
    relative,
    set_seed,
)
from ex2.training import (
    TRAIN_SETTINGS,
    WRITEUP_REVIEWS,
    History,
    evaluate,
    explain,
    make_optimizer,
    predict,
    predict_split,
    recipe,
    train,
    train_epoch,
    train_model,
    train_step,
)

__all__ = [  # what the notebooks name, and only that
    "GRUCell", "History", "MODEL_NAMES", "RNNCell", "RUN_MODES", "RecurrentBPTT", "RelativePositions", "RunMode",
    "SelfAttention", "SentimentModel", "TOKENIZERS", "TOKENIZER_VERSION", "TRAIN_SETTINGS", "TokenScoreClassifier",
    "WRITEUP_REVIEWS", "count_parameters", "course_tokenize", "evaluate", "explain", "find_imdb", "get_device",
    "lengths_to_mask", "load_imdb", "make_model", "make_optimizer", "pool_token_scores", "predict", "predict_split",
    "read_imdb", "recipe", "relative", "run_cell", "set_seed", "stratified_sample", "tokenize", "train", "train_epoch",
    "train_model", "train_step", "training_vocabulary", "validation_split",
]
