"""The committed results in checkpoints/: every job of the plan has its record, made with today's recipe, with the
per-review correctness behind its accuracies; the checkpoints are the seed-0 records' models; README.md's tables are
the records'."""
import json
from functools import lru_cache

import numpy as np
import pytest

import helpers
from ex2 import data, runtime
from ex2.checkpoints import checkpoint_path, load_checkpoint
from ex2.models import DEFAULT_CONFIGS
from experiments import plan, records, stats


@lru_cache(maxsize=1)
def committed() -> dict:
    return records.Results.load().runs


def test_every_committed_run_keeps_which_reviews_it_got_right_and_they_give_its_accuracy():
    """`stats.paired_compare` counts the reviews' noise only where both groups keep per-review flags: every training run
    of the plan must (25,000 test reviews; 5,000 validation reviews unless validation was trained on), and the flags
    must be the recorded accuracies' own."""
    runs = [r for r in committed().values() if isinstance(r, records.RunRecord)]
    assert len(runs) == sum(j["kind"] == "run" for j in plan.experiment_plan())
    for record in runs:
        test = stats.unpack_bits(record.correct["test"])
        assert len(test) == 25_000 and test.mean() == pytest.approx(record.test_acc, abs=1e-12), record.key
        if record.val_acc is None:  # a refit on training + validation: nothing held out to keep
            assert "val" not in record.correct, record.key
        else:
            val = stats.unpack_bits(record.correct["val"])
            assert len(val) == 5_000 and val.mean() == pytest.approx(record.val_acc, abs=1e-12), record.key


def test_committed_records_cover_the_plan():
    runs = committed()
    for job in plan.experiment_plan():
        record = runs[job["key"]]
        assert record.key == job["key"] and 0.5 < record.test_acc < 1
        if job["kind"] == "run":  # made with today's plan: the job's recipe, config, seed and inputs
            settings = job["settings"]
            if job["refit_of"]:  # trained on train + validation for its parent's best epoch
                settings = {**settings, "epochs": runs[job["refit_of"]].best_epoch, "patience": None}
                assert record.val_acc is None and record.n_train == runs[job["refit_of"]].n_train + 5000
            assert record.seed == job["seed"] and record.settings == settings
            assert plan.full_config(job["name"], record.config, named=False) == plan.full_config(
                job["name"], job["config"]), job["key"]  # the same model, whether a default is spelt out or not
            assert (record.tokenizer, record.split) == (job["tokenizer"], data.SPLIT_VERSION)
            if not job["refit_of"] and job["settings"]["patience"] is not None:  # patience, not a cap, ended it
                assert record.epochs_run < job["settings"]["epochs"], job["key"]
            elif not job["refit_of"]:  # a fixed number of epochs (the published recipe): all of them, the last kept
                assert record.epochs_run == job["settings"]["epochs"], job["key"]
    for cell in ("rnn", "gru"):  # notebook 03's search: the objective is the mean over the seeds
        trials = runs[plan.search_key(cell)].trials
        assert trials and all(isinstance(t["hidden"], int) for t in trials)
        for t in trials:
            if t["state"] == "complete" and t["repeat_of"] is None:
                assert t["value"] == pytest.approx(np.mean(t["seed_values"]), abs=1e-4)
    # each record keeps its 30,000 predicted labels packed in bits (about 5 kB): the whole folder stays small
    assert sum(p.stat().st_size for p in (runtime.CHECKPOINT_DIR / "runs").iterdir()) < 3_000_000


def test_every_committed_checkpoint_is_a_named_model():
    expected = {checkpoint_path(name, trainable) for name in helpers.MODEL_NAMES for trainable in (True, False)}
    assert set(runtime.CHECKPOINT_DIR.glob("*.pt")) == expected


@pytest.mark.parametrize("trainable", [True, False], ids=["trainable", "frozen"])
@pytest.mark.parametrize("name", helpers.MODEL_NAMES)
def test_committed_checkpoints_load_and_match_their_records(name, trainable):
    path = checkpoint_path(name, trainable)
    assert path.exists(), f"{path} is missing: python -m experiments.recompute --only {name}/"
    assert path.stat().st_size <= 2_000_000
    model = load_checkpoint(path)
    record = committed()[f"{name}/{'trainable' if trainable else 'frozen'}/seed0"]
    for key in ("test_acc", "val_acc", "history", "writeup_probs", "settings", "config"):
        assert model.info.record[key] == getattr(record, key), key  # seed 0 of the records is this checkpoint
    # trained with today's recipe: the named architecture and settings
    config, settings = helpers.recipe(name, trainable)
    assert model.info.name == name and model.info.config == {**DEFAULT_CONFIGS[name], **config}
    assert model.info.record["settings"] == settings and model.info.tokenizer == helpers.TOKENIZER_VERSION
    assert model.trainable == trainable and (model.delta is not None) == trainable
    p = helpers.predict(model, ["an absolute masterpiece, i loved every minute of it",
                                "the worst film i have ever seen, a boring waste of time"])
    assert p[0] > 0.5 > p[1]
    np.testing.assert_allclose(helpers.predict(model, list(helpers.WRITEUP_REVIEWS)), record.writeup_probs,
                               atol=2e-3)  # its stored predictions are reproduced (Δ is stored in float16)


def test_the_committed_checkpoint_reproduces_its_test_accuracy(real_imdb, one_thread):
    model = load_checkpoint(checkpoint_path("weighted"))
    assert helpers.evaluate(model, real_imdb.test)["acc"] == committed()["weighted/trainable/seed0"].test_acc


def test_the_readme_table_is_the_committed_records():
    from tools import readme_table as tool

    results = records.Results.load()
    assert tool.peer_table(results) in (runtime.ROOT / "README.md").read_text(), "README.md's table is stale"
    table = tool.markdown_table(results)
    assert table in (runtime.ROOT / "README.md").read_text(), "README.md's table is stale: python -m tools.readme_table"
    for name in helpers.MODEL_NAMES:  # each row's test accuracies, recomputed here from the raw records
        row = next(line for line in table.splitlines() if line.startswith(f"| {tool.LABELS[name]} |"))
        for setting in ("trainable", "frozen"):
            acc = np.array([r.test_acc for key, r in results.runs.items() if key.startswith(f"{name}/{setting}/seed")])
            assert len(acc) == 5, (name, setting)
            assert f"{100 * acc.mean():.1f} ± {100 * acc.std(ddof=1):.1f} %" in row, (name, setting, row)


def test_every_committed_record_reads_back_as_it_was_written():
    """The typed records are the JSON files' own: each record read and written again gives the file's content, key
    for key (and byte for byte where the file keeps today's order of keys)."""
    results = records.Results.load()
    in_order = 0
    for key, record in results.runs.items():
        path = plan.record_path(runtime.CHECKPOINT_DIR, key)
        text = path.read_text(encoding="utf-8")
        assert json.loads(text) == record.to_dict(), key
        in_order += text == json.dumps(record.to_dict(), separators=(",", ":"))
    assert in_order > 0.8 * len(results)  # a few records had their correctness added last, at the end of the file
