"""Run records: a trained model's `RunRecord` (plain JSON values, kept in its checkpoint), the record files (atomic,
named after the key, read back unchanged), damaged files, the queries of `Results` and the tables made from them."""
import json

import pytest

import helpers
from ex2 import checkpoints, runtime
from experiments import plan, records, stats


def test_a_run_record_is_plain_json_and_its_checkpoint_keeps_it(tmp_path, toy_data):
    model, history = helpers.train_model("attn_weighted", toy_data, epochs=1, batch_size=4, progress=False,
                                         verbose=False, config={"window": 3})
    record = records.run_record(model, history, toy_data, seed=0)
    assert isinstance(record, records.RunRecord) and model.info.record == record.to_dict()
    assert json.loads(json.dumps(record.to_dict())) == record.to_dict()  # plain JSON values
    assert records.RunRecord.from_dict(record.to_dict()) == record
    probs = [round(helpers.explain(model, text)["prob"], 4) for text in helpers.WRITEUP_REVIEWS]
    assert record.writeup_probs == probs and record.seed == 0 and record.name == "attn_weighted"
    assert record.history == history.as_dict() and record.epochs_run == 1 and record.n_train == 18
    network = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("delta."))
    assert record.parameters == network + 50 * len(model.adapted_ids)  # the net + one 50-d correction per word
    assert len(model.adapted_ids) > 0 and record.settings["batch_size"] == 4
    assert record.flags("test").mean() == record.test_acc and len(record.flags("val")) == len(toy_data.val)
    assert record.job is None and "job" not in record.to_dict()  # a worker adds the job that made it
    path = checkpoints.save_checkpoint(model, tmp_path / "m.pt")
    assert path.stat().st_size < 2_000_000 and not list(tmp_path.glob("*.part"))
    loaded = checkpoints.load_checkpoint(path)
    assert loaded.info == model.info  # name, config, max_len, tokenizer and the run record, all of it
    assert loaded.info.config["window"] == 3 and loaded.attention.window == 3 and loaded.info.max_len == 12
    right = (helpers.predict_split(model, toy_data.test) > 0.5) == toy_data.test.labels.numpy().astype(bool)
    assert loaded.info.record["test_acc"] == pytest.approx(right.mean())  # accuracy counted from P(positive)
    assert not loaded.training
    text = "a wonderful film"
    assert helpers.predict(loaded, text) == pytest.approx(helpers.predict(model, text), abs=1e-4)
    with pytest.raises(ValueError, match="unknown model"):
        checkpoints.checkpoint_path("bert")


def run(key: str, acc: float, **fields) -> dict:
    """A stored training run's record, with only what the queries read."""
    return {"name": key.split("/")[0], "seed": int(key.rsplit("seed", 1)[1]), "val_acc": acc, "test_acc": acc,
            "job": {"key": key, "kind": "run"}, **fields}


def test_results_load_every_record_by_its_key_as_its_kind(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results"):
        records.Results.load(tmp_path)
    stored = [run("gru/trainable/seed0", 0.8), run("gru/trainable/seed1", 0.7),
              {"C": 1.0, "val_by_C": {}, "val_acc": 0.74, "test_acc": 0.75, "correct": {}, "tokenizer": "t",
               "split": "s", "job": {"key": "tfidf", "kind": "tfidf"}},
              {"trials": [], "best_size": 99, "tokenizer": "t", "split": "s", "job": {"key": "search/gru",
                                                                                       "kind": "search"}}]
    for record in stored:
        runtime.save_json(record, plan.record_path(tmp_path, record["job"]["key"]))
    results = records.Results.load(tmp_path)
    assert len(results) == 4 and results.folder == tmp_path
    assert isinstance(results.anchor(), records.AnchorRecord) and results.anchor().test_acc == 0.75
    assert results.search("gru").best_size == 99 and results.search("rnn") is None
    assert [r.test_acc for r in results.group("gru", "trainable")] == [0.8, 0.7]
    runtime.save_json({**run("sum/trainable/seed0", 0.8), "loss": 1.0}, plan.record_path(tmp_path, "x"))
    with pytest.raises(ValueError, match=r"x\.json: fields \['loss'\] are not those of a RunRecord"):
        records.Results.load(tmp_path)  # a record of another shape is named, not half read


def test_a_group_is_asked_for_by_model_setting_variant_and_seeds():
    keys = ["gru/trainable/seed0", "gru/trainable/seed1", "gru/trainable/seed2", "gru-64/trainable/seed0",
            "gru/frozen/seed0", "gru-refit/frozen/seed1", "tokens-glove6b-v1/gru/frozen/seed2",
            "rnn-ablation/trainable, lr 3e-3/seed0", "rnn-ablation/frozen GloVe, default W_hh/seed0",
            "ablation/attn_sum/published/frozen/seed1", "gru-trainable/frozen/seed0"]
    results = records.Results({key: records.from_dict(run(key, 0.5 + i / 100)) for i, key in enumerate(keys)})

    def group(*args, **kwargs):
        return [r.key for r in results.group(*args, **kwargs)]

    assert group("gru", "trainable") == keys[:3]  # a whole group, in key order; "gru" is not a prefix of "gru-64"
    assert group("gru", "trainable", seeds=(0, 2)) == [keys[0], keys[2]] and group("gru", "frozen") == [keys[4]]
    assert group("gru", "trainable", 64) == [keys[3]] and group("gru", "frozen", "refit") == [keys[5]]
    assert group("gru", "frozen", tokenizer="glove6b-v1") == [keys[6]]
    assert group("gru", "frozen", tokenizer=helpers.TOKENIZER_VERSION) == [keys[4]]
    assert group("rnn", "trainable", ablation="trainable, lr 3e-3") == [keys[7]]
    assert group("attn_sum", "frozen", ablation="published") == [keys[9]]
    assert group("gru", "trainable", "x") == []
    assert results.ablations("rnn") == ["trainable, lr 3e-3", "frozen GloVe, default W_hh"]
    assert results.ablations("attn_sum") == ["published"]
    with pytest.raises(ValueError, match="setting must be one of"):
        results.group("gru", "finetuned")


def test_a_cut_record_names_the_file(tmp_path):
    path = runtime.save_json(run("sum/trainable/seed0", 0.8), plan.record_path(tmp_path, "sum/trainable/seed0"))
    path.write_text(path.read_text()[:20])  # cut short, as by a full disk or an interrupted copy
    with pytest.raises(ValueError) as info:
        records.Results.load(tmp_path)
    assert str(path) in str(info.value) and "is damaged" in str(info.value) and "git checkout" in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing"):
        runtime.load_json(tmp_path / "nope.json", "a record", "rerun it")


def test_mean_std_ties_and_the_results_table():
    assert stats.mean_std([0.8, 0.9, 1.0]) == pytest.approx((0.9, 0.1))  # the sample std (n − 1)
    assert stats.mean_std([0.7]) == (0.7, 0.0)
    assert stats.format_mean_std([0.8, 0.9, 1.0]) == "0.900 ± 0.100" and stats.format_mean_std([0.5]) == "0.500 ± 0.000"
    groups = {"a": [records.RunRecord(name="a", seed=0, val_acc=0.82, test_acc=0.80, best_epoch=3, parameters=100),
                    records.RunRecord(name="a", seed=1, val_acc=0.84, test_acc=0.82, best_epoch=5, parameters=100)],
              "b": [records.RunRecord(name="b", seed=0, val_acc=0.70, test_acc=0.71, best_epoch=1, parameters=7)]}
    table = records.results_table(groups)
    assert list(table.index) == ["a", "b"]
    assert table.loc["a", "test acc"] == "0.810 ± 0.014" and table.loc["a", "seeds"] == 2  # std: 0.02 / √2
    assert table.loc["b", "test acc"] == "0.710 ± 0.000" and table.loc["a", "val acc"] == "0.830 ± 0.014"
    assert (table.loc["a", "test mean"], table.loc["a", "test std"]) == pytest.approx((0.81, 0.0141421), abs=1e-6)
    assert table.loc["a", "val − test"] == "+0.020" and table.loc["b", "val − test"] == "-0.010"
    assert table.loc["a", "best epoch"] == "3/5" and table.loc["b", "parameters"] == 7
