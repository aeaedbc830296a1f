"""Checkpoints, run records and the one recompute path: save / load (and damaged files), `load_or_train`,
the per-job records and the tables made from them, tools/train_results.py (plan, workers, resuming),
`experiments.recompute`, and the committed results in checkpoints/."""
import json
from functools import lru_cache

import numpy as np
import pytest
import torch
from scipy import stats

import comparisons
import experiments
import helpers


# --- checkpoints ---

def test_checkpoint_roundtrip_keeps_the_model_and_its_record(tmp_path, toy_data):
    model, history = helpers.train_model("attn_weighted", toy_data, epochs=1, batch_size=4, progress=False,
                                         verbose=False, config={"window": 3})
    record = experiments.run_record(model, history, toy_data, seed=0)
    assert record is model.info.record and json.loads(json.dumps(record)) == record  # plain JSON values
    assert record["writeup_probs"] == [round(helpers.explain(model, text)["prob"], 4) for text in helpers.WRITEUP_REVIEWS]
    assert record["history"] == history.as_dict() and record["epochs_run"] == 1 and record["n_train"] == 18
    network = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("delta."))
    assert record["parameters"] == network + 50 * len(model.adapted_ids)  # the net + one 50-d correction per word
    assert len(model.adapted_ids) > 0 and record["settings"]["batch_size"] == 4
    path = helpers.save_checkpoint(model, tmp_path / "m.pt")
    assert path.stat().st_size < 2_000_000 and not list(tmp_path.glob("*.part"))
    loaded = helpers.load_checkpoint(path)
    assert loaded.info == model.info  # name, config, max_len, tokenizer and the run record, all of it
    assert loaded.info.config["window"] == 3 and loaded.attention.window == 3 and loaded.info.max_len == 12
    right = (helpers.predict_split(model, toy_data.test) > 0.5) == toy_data.test.labels.numpy().astype(bool)
    assert loaded.info.record["test_acc"] == pytest.approx(right.mean())  # accuracy counted from P(positive)
    assert not loaded.training
    text = "a wonderful film"
    assert helpers.predict(loaded, text) == pytest.approx(helpers.predict(model, text), abs=1e-4)
    with pytest.raises(ValueError, match="unknown model"):
        helpers.checkpoint_path("bert")


def test_a_missing_checkpoint_names_the_way_back(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        helpers.load_checkpoint(tmp_path / "missing.pt")
    assert str(tmp_path / "missing.pt") in str(info.value) and "git checkout" in str(info.value)


def test_a_truncated_checkpoint_names_the_file_and_the_way_back(tmp_path):
    good = helpers.checkpoint_path("gru").read_bytes()
    cut = tmp_path / "gru.pt"
    cut.write_bytes(good[: len(good) // 2])  # an interrupted copy or download
    with pytest.raises(ValueError) as info:
        helpers.load_checkpoint(cut)
    message = str(info.value)
    assert str(cut) in message and "git checkout" in message and "python -m tools.train_results" in message
    old = tmp_path / "old.pt"  # a readable torch file that is not a checkpoint of today's format
    torch.save({"meta": {"seed": 0}, "state_dict": {}}, old)
    with pytest.raises(ValueError, match="old.pt is not a readable checkpoint"):
        helpers.load_checkpoint(old)


def test_a_checkpoint_reads_reviews_with_its_own_tokenizer(tmp_path):
    model = helpers.make_model("sum", seed=0)
    model.info.tokenizer = "course-v1"
    loaded = helpers.load_checkpoint(helpers.save_checkpoint(model, tmp_path / "s.pt"))
    assert helpers.explain(loaded, "Don't miss it!!")["tokens"] == ["don", "miss", "it"]
    model.info.tokenizer = "glove6b-v0"  # a version this code does not have: a clear error, not silent misreading
    with pytest.raises(ValueError, match="unknown tokenizer 'glove6b-v0'"):
        helpers.load_checkpoint(helpers.save_checkpoint(model, tmp_path / "old.pt"))


def test_load_or_train_trains_once_prints_its_epochs_and_then_loads(toy_data, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SMOKE_TEST", raising=False)
    bars, progress = [], helpers.progress_bar

    def recorded(*args, **kwargs):
        bars.append((kwargs.get("desc"), kwargs.get("disable")))
        return progress(*args, **kwargs)

    monkeypatch.setattr(helpers, "progress_bar", recorded)
    model = experiments.load_or_train("weighted", toy_data, folder=tmp_path)
    record = model.info.record
    history = helpers.History(**record["history"])
    epochs = range(1, record["epochs_run"] + 1)
    assert capsys.readouterr().out.splitlines() == [history.line(e) for e in epochs]  # one line per epoch
    epochs_planned = helpers.recipe("weighted")[1]["epochs"]
    assert bars == [(f"epoch {e}/{epochs_planned}", None) for e in epochs]  # and a bar (None: shown where it can be)
    assert record["seed"] == 0 and record["settings"] == helpers.recipe("weighted")[1]  # the named recipe
    right = (helpers.predict_split(model, toy_data.test) > 0.5) == toy_data.test.labels.numpy().astype(bool)
    assert record["test_acc"] == pytest.approx(right.mean())
    path = helpers.checkpoint_path("weighted", folder=tmp_path)
    assert path.exists()

    def no_training(*args, **kwargs):
        raise AssertionError("load_or_train trained although the checkpoint exists")

    monkeypatch.setattr(helpers, "train_model", no_training)
    again = experiments.load_or_train("weighted", toy_data, folder=tmp_path)
    assert again.info == model.info and capsys.readouterr().out == ""


def test_load_or_train_never_saves_in_a_smoke_run(toy_data, tmp_path, monkeypatch):
    monkeypatch.setenv("SMOKE_TEST", "1")
    folder = tmp_path / "checkpoints"
    model = experiments.load_or_train("sum", toy_data, finetune=False, folder=folder)
    assert model.delta is None and model.info.record["config"]["finetune"] is False
    assert not folder.exists() or not list(folder.iterdir())


# --- run records: files, damaged files, tables ---

def test_record_files_are_written_atomically_and_named_after_the_key(tmp_path, train_results_tool):
    assert experiments.record_path(tmp_path, "gru/trainable/seed0") == tmp_path / "runs" / "gru__trainable__seed0.json"
    keys = [job["key"] for job in experiments.experiment_plan()] + ["search/rnn", "search/gru"]
    paths = {experiments.record_path(tmp_path, key) for key in keys}
    assert len(paths) == len(keys) and {p.parent for p in paths} == {tmp_path / "runs"}  # one file per job
    path = helpers.save_json({"job": {"key": "a/b"}, "acc": 0.5}, experiments.record_path(tmp_path, "a/b"))
    assert helpers.load_json(path, "a record", "rerun it") == {"job": {"key": "a/b"}, "acc": 0.5}
    with pytest.raises(RuntimeError, match="disk full"):
        with helpers.atomic_path(path) as tmp:
            tmp.write_text("{half a rec")
            raise RuntimeError("disk full")
    assert json.loads(path.read_text())["acc"] == 0.5  # the old file is untouched, no temporary file is left
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_load_results_reads_every_record_by_its_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results"):
        experiments.load_results(tmp_path)
    for key, acc in (("gru/trainable/seed0", 0.8), ("gru/trainable/seed1", 0.7), ("tfidf", 0.75)):
        helpers.save_json({"job": {"key": key}, "test_acc": acc}, experiments.record_path(tmp_path, key))
    results = experiments.load_results(tmp_path)
    assert {key: r["test_acc"] for key, r in results["runs"].items()} == {
        "gru/trainable/seed0": 0.8, "gru/trainable/seed1": 0.7, "tfidf": 0.75}
    assert [r["test_acc"] for r in experiments.group_records(results, "gru/trainable")] == [0.8, 0.7]
    assert experiments.group_records(results, "gru") == []  # a prefix is a whole group, not the start of a key


def test_a_cut_record_names_the_file(tmp_path):
    path = helpers.save_json({"job": {"key": "sum/trainable/seed0"}, "test_acc": 0.8},
                             experiments.record_path(tmp_path, "sum/trainable/seed0"))
    path.write_text(path.read_text()[:20])  # cut short, as by a full disk or an interrupted copy
    with pytest.raises(ValueError) as info:
        experiments.load_results(tmp_path)
    assert str(path) in str(info.value) and "is damaged" in str(info.value) and "git checkout" in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing"):
        helpers.load_json(tmp_path / "nope.json", "a record", "rerun it")


def test_mean_std_ties_and_the_results_table():
    assert experiments.mean_std([0.8, 0.9, 1.0]) == pytest.approx((0.9, 0.1))  # the sample std (n − 1)
    assert experiments.mean_std([0.7]) == (0.7, 0.0)
    assert experiments.format_mean_std([0.8, 0.9, 1.0]) == "0.900 ± 0.100" and experiments.format_mean_std([0.5]) == "0.500 ± 0.000"
    records = {"a": [{"val_acc": 0.82, "test_acc": 0.80, "best_epoch": 3, "parameters": 100},
                     {"val_acc": 0.84, "test_acc": 0.82, "best_epoch": 5, "parameters": 100}],
               "b": [{"val_acc": 0.70, "test_acc": 0.71, "best_epoch": 1, "parameters": 7}]}
    table = experiments.results_table(records)
    assert list(table.index) == ["a", "b"]
    assert table.loc["a", "test acc"] == "0.810 ± 0.014" and table.loc["a", "seeds"] == 2  # std: 0.02 / √2
    assert table.loc["b", "test acc"] == "0.710 ± 0.000" and table.loc["a", "val acc"] == "0.830 ± 0.014"
    assert (table.loc["a", "test mean"], table.loc["a", "test std"]) == pytest.approx((0.81, 0.0141421), abs=1e-6)
    assert table.loc["a", "val − test"] == "+0.020" and table.loc["b", "val − test"] == "-0.010"
    assert table.loc["a", "best epoch"] == "3/5" and table.loc["b", "parameters"] == 7


def test_compare_pairs_seeds_and_uses_a_t_interval():
    def group(values, seeds=None):
        return [{"seed": s, "test_acc": v} for s, v in zip(seeds or range(len(values)), values)]

    a, b = group([0.80, 0.82, 0.81, 0.83, 0.79]), group([0.79, 0.80, 0.80, 0.81, 0.78])
    c = experiments.paired_compare(a, b)
    diffs = np.array([0.01, 0.02, 0.01, 0.02, 0.01])
    half = 2.7764451 * diffs.std(ddof=1) / np.sqrt(5)  # t(0.975, 4 degrees of freedom)
    assert c["n"] == 5 and c["diff"] == pytest.approx(0.014)
    assert (c["lo"], c["hi"]) == pytest.approx((0.014 - half, 0.014 + half)) and c["verdict"] == "better"
    assert experiments.paired_compare(b, a)["verdict"] == "worse" and experiments.paired_compare(b, a)["diff"] == pytest.approx(-0.014)
    # pairing matters: the same values, unpaired seed noise (seed 4 of a against seed 0 of b) is a tie
    shuffled = group([0.79, 0.80, 0.80, 0.81, 0.78], seeds=[4, 0, 1, 2, 3])
    assert experiments.paired_compare(a, shuffled)["verdict"] != "better"
    tie = experiments.paired_compare(group([0.80, 0.82, 0.78]), group([0.81, 0.80, 0.80]))
    assert tie["lo"] < 0 < tie["hi"] and tie["verdict"] == "tie" and tie["p"] > 0.2
    hint = experiments.paired_compare(group([0.82, 0.83, 0.805]), group([0.80, 0.80, 0.80]))
    assert 0.05 < hint["p"] < 0.2 and hint["lo"] < 0 and hint["verdict"] == "suggestive"
    assert experiments.paired_compare(group([0.8]), group([0.7]))["verdict"] == "one seed: no interval"
    against_constant = experiments.paired_compare(a, 0.79)  # a fixed anchor: the differences to it, seed by seed
    assert against_constant["n"] == 5 and against_constant["diff"] == pytest.approx(0.02)
    assert against_constant == experiments.paired_compare(a, group([0.79] * 5))
    assert experiments.paired_compare(group([0.8]), group([0.7], seeds=[3]))["n"] == 0  # nothing paired
    line = experiments.format_comparison(c)
    assert line.startswith("+1.40 pts, 95 % CI [") and line.endswith("n = 5, p = 0.005: better")

    assert c["noise"] == "seeds" and "(seeds only)" in line  # these records keep no per-review flags


def _simulated_runs(rng, p_a, p_b, seeds: int, shared: float):
    """Per-review correctness of two models over `seeds` paired seeds, on reviews whose chance of being classified
    right by a random seed is p_a / p_b; `shared` of each draw is common to both models (the same review is hard
    for both), so their errors are correlated as real models' are."""
    groups = {"a": [], "b": []}
    for seed in range(seeds):
        common = rng.random(len(p_a))
        for name, p in (("a", p_a), ("b", p_b)):
            u = np.where(rng.random(len(p)) < shared, common, rng.random(len(p)))
            flags = u < p
            groups[name].append({"seed": seed, "test_acc": flags.mean(), "correct": {"test": experiments.pack_bits(flags)}})
    return groups["a"], groups["b"]


def test_compare_counts_the_reviews_noise_and_covers_the_true_difference():
    """Synthetic predictions where the answer is known: a population of reviews with a true per-review accuracy for
    each model (b is 1 point worse on average); each trial draws 2,000 reviews and 5 seeds. The 95 % interval of
    `paired_compare` must cover the true difference in about 95 % of trials; the seeds-only interval, which treats the
    2,000 reviews as fixed, covers it far less often (here the reviews, not the seeds, are most of the noise)."""
    rng = np.random.default_rng(0)
    population_a = rng.beta(0.4, 0.1, size=200_000)  # most reviews: always right or always wrong, whatever the seed
    population_b = np.clip(population_a - 0.01 + 0.5 * rng.standard_normal(200_000), 0, 1)
    true = population_a.mean() - population_b.mean()
    covered, covered_seeds_only, trials = 0, 0, 300
    for _ in range(trials):
        idx = rng.integers(0, len(population_a), 2000)
        a, b = _simulated_runs(rng, population_a[idx], population_b[idx], seeds=5, shared=0.9)
        c = experiments.paired_compare(a, b)
        assert c["noise"] == "seeds and reviews" and c["n"] == 5
        covered += c["lo"] <= true <= c["hi"]
        stripped = experiments.paired_compare([{k: v for k, v in r.items() if k != "correct"} for r in a],
                                   [{k: v for k, v in r.items() if k != "correct"} for r in b])
        covered_seeds_only += stripped["lo"] <= true <= stripped["hi"]
    assert 0.91 <= covered / trials <= 0.99, covered / trials
    assert covered_seeds_only / trials < 0.8, covered_seeds_only / trials


def test_compare_with_reviews_matches_the_formula_and_takes_an_anchor_record():
    rng = np.random.default_rng(1)
    p_a = rng.uniform(0.5, 1.0, 500)  # reviews on which b is better or worse than a, whatever the seed
    a, b = _simulated_runs(rng, p_a, np.clip(p_a - 0.05 + 0.3 * rng.standard_normal(500), 0, 1), seeds=3, shared=0.9)
    c = experiments.paired_compare(a, b)
    fa = np.stack([experiments.unpack_bits(r["correct"]["test"]) for r in a]).astype(float)
    fb = np.stack([experiments.unpack_bits(r["correct"]["test"]) for r in b]).astype(float)
    d = fa.mean(1) - fb.mean(1)
    # the two-way ANOVA of D (3 seeds x 500 reviews): each source of noise once, the seeds-only interval as a floor
    D = fa - fb
    ss_total = ((D - D.mean()) ** 2).sum()
    ss_seeds, ss_reviews = 500 * ((d - D.mean()) ** 2).sum(), 3 * ((D.mean(0) - D.mean()) ** 2).sum()
    ms_resid = (ss_total - ss_seeds - ss_reviews) / (2 * 499)
    v_seeds, v_main = ss_seeds / 2 / 1500, max(ss_reviews / 499 - ms_resid, 0) / 1500
    assert v_main > 0
    df = (v_seeds + v_main) ** 2 / (v_seeds**2 / 2 + v_main**2 / 499)
    half = max(stats.t.ppf(0.975, df) * np.sqrt(v_seeds + v_main), stats.t.ppf(0.975, 2) * np.sqrt(v_seeds))
    assert c["diff"] == pytest.approx(d.mean()) and (c["lo"], c["hi"]) == pytest.approx((d.mean() - half, d.mean() + half))
    anchor = b[0]  # one deterministic record (TF-IDF): the same for every seed of a
    assert experiments.paired_compare(a, anchor) == experiments.paired_compare(a, [{**anchor, "seed": r["seed"]} for r in a])
    assert experiments.paired_compare(a, anchor)["noise"] == "seeds and reviews"
    flags = experiments.unpack_bits(experiments.pack_bits([True, False, True]))
    assert flags.tolist() == [True, False, True]


def test_comparisons_made_counts_each_distinct_comparison_once_by_verdict(monkeypatch):
    monkeypatch.setattr(comparisons, "_VERDICTS", {})
    runs = lambda accs: [{"seed": s, "test_acc": a} for s, a in enumerate(accs)]
    better = (runs([0.82, 0.83, 0.84, 0.83]), runs([0.80, 0.80, 0.81, 0.80]))
    experiments.paired_compare(*better)
    experiments.paired_compare(*better)  # the same pair again (a rerun cell): still one comparison
    experiments.paired_compare(runs([0.80, 0.82, 0.78]), runs([0.81, 0.80, 0.80]))  # a tie
    experiments.unpaired_compare([0.80, 0.81, 0.79], [0.90, 0.91, 0.92])  # worse
    experiments.paired_compare(runs([0.8]), runs([0.7]))  # one seed: no interval, no verdict to count
    assert experiments.comparisons_made() == {"better": 1, "worse": 1, "suggestive": 0, "tie": 1}


def test_unpaired_compare_is_welchs_test():
    ours, theirs = [0.807, 0.812, 0.803, 0.809], [0.8057, 0.8024, 0.8202]
    c = experiments.unpaired_compare(ours, theirs)
    welch = stats.ttest_ind(ours, theirs, equal_var=False)
    assert c["diff"] == pytest.approx(np.mean(ours) - np.mean(theirs)) and c["p"] == pytest.approx(welch.pvalue)
    assert c["lo"] < c["diff"] < c["hi"] and c["verdict"] == "tie" and c["noise"] == "seeds"
    assert experiments.unpaired_compare([0.90, 0.91, 0.92], [0.80, 0.81, 0.80])["verdict"] == "better"
    assert experiments.unpaired_compare([0.9], theirs)["verdict"] == "one seed: no interval"


def test_compare_group_means_tests_the_groups_not_the_pooled_runs():
    # four groups whose effects disagree (+0.1, +0.1, +0.9, +1.7 points) but whose seeds agree within each group:
    # pooled as independent runs the twelve differences look precise; over the four groups they do not
    pairs = []
    for effect in (0.001, 0.001, 0.009, 0.017):
        b = [{"seed": s, "val_acc": 0.80 + 0.001 * s} for s in range(3)]
        pairs.append(([{**r, "val_acc": r["val_acc"] + effect} for r in b], b))
    c = experiments.compare_group_means(pairs)
    one_sample = stats.ttest_1samp([0.001, 0.001, 0.009, 0.017], 0.0)
    assert c["n"] == 4 and c["diff"] == pytest.approx(0.007) and c["p"] == pytest.approx(one_sample.pvalue)
    assert c["lo"] < 0 < c["hi"] and c["verdict"] == "suggestive" and c["noise"] == "groups"
    pooled = experiments.paired_compare([{**r, "seed": (k, r["seed"])} for k, (a, _) in enumerate(pairs) for r in a],
                                        [{**r, "seed": (k, r["seed"])} for k, (_, b) in enumerate(pairs) for r in b], "val_acc")
    assert pooled["lo"] > 0  # the pooled test calls it better: what the group-level test is there to prevent
    assert "(over groups)" in experiments.format_comparison(c)

# --- tools/train_results.py: the plan, the workers, resuming ---

def test_the_plan_has_one_checkpoint_per_named_model_and_a_smoke_version(train_results_tool):
    plan = experiments.experiment_plan()
    keys = [job["key"] for job in plan]
    assert len(set(keys)) == len(keys)
    runs = [job for job in plan if job["kind"] == "run"]
    checkpoints = [helpers.checkpoint_path(job["name"], job["finetune"]) for job in runs if job["checkpoint"]]
    assert sorted(checkpoints) == sorted(helpers.checkpoint_path(name, finetune) for name in helpers.MODEL_NAMES
                                         for finetune in (True, False))
    for job in runs:
        config, settings = helpers.recipe(job["name"], job["finetune"])
        assert job["config"].items() >= config.items()  # variants change the recipe, never drop it
        if job["checkpoint"]:  # the committed model is the named recipe, seed 0
            assert job["seed"] == 0 and job["config"] == config and job["settings"] == settings
    # what the notebooks read, written out here rather than rebuilt from the plan's own constants
    assert experiments.SEEDS == (0, 1, 2, 3, 4) and experiments.SEEDS3 == (0, 1, 2)
    assert {"gru/trainable/seed4", "attn_weighted/frozen/seed4", "rnn-64/frozen/seed4", "gru-64/trainable/seed0",
            "attn_sum-variant/trainable/seed4", "attn_weighted-variant/frozen/seed2", "rnn-ablation/trainable, lr 3e-3/seed2",
            "rnn-ablation/frozen GloVe, default W_hh/seed0", "weighted-decay/trainable/seed4", "sum-batch128/trainable/seed2",
            "gru-107/trainable/seed2", "rnn-86/trainable/seed0", "tokens-glove6b-v1/attn_weighted/frozen/seed2",
            "gru-vocab2/trainable/seed1", "attn_weighted-refit/trainable/seed2", "tfidf", "tokens-glove6b-v1/tfidf",
            "ablation/attn_sum/published, sum/frozen/seed2", "ablation/attn_weighted/published, residual layout/frozen/seed0",
            "ablation/attn_sum/earlier design, our recipe/frozen/seed1", "gru-refit/frozen/seed2",
            "attn_sum-refit/frozen/seed0", "attn_weighted-refit/frozen/seed1", "attn_sum-window0/frozen/seed0",
            "attn_weighted-window0/frozen/seed0"} <= set(keys)
    assert all(job["config"]["window"] == 0 for job in runs if "-window0/" in job["key"])
    families = {"named": 6 * 2 * 5, "64 units": 2 * 2 * 5, "rnn ablation": 4 * 3, "layouts": 2 * (5 + 3),
                "attention ablation": 2 * 6 * 3, "recipe variants": 5 + 5 + 3, "tokenizer": 2 * 2 * 3 + 1,
                "vocabulary": 3, "refit": 2 * 3, "frozen refit": 3 * 3, "tfidf": 1,
                "window-0 control": 2 * 10}  # frozen and trainable, 5 seeds each
    searched = [k for k in keys if k.split("/")[0] in ("rnn-86", "gru-107") or
                (k.split("/")[0].split("-")[0] in ("rnn", "gru") and k.split("/")[0].split("-")[-1].isdigit()
                 and k.split("/")[0].split("-")[-1] != "64")]
    assert len(keys) == sum(families.values()) + len(searched) and len(searched) in (6, 9, 12)
    for seed in experiments.SEEDS:  # the headline comparisons: every named model both ways, 64 vs 128, the layouts
        assert {f"{name}/{setting}/seed{seed}" for name in helpers.MODEL_NAMES
                for setting in ("trainable", "frozen")} <= set(keys)
        assert {f"{cell}-64/{setting}/seed{seed}" for cell in ("rnn", "gru")
                for setting in ("trainable", "frozen")} <= set(keys)
        assert {f"{name}-variant/trainable/seed{seed}" for name in experiments.LAYOUT_VARIANTS} <= set(keys)
    for seed in experiments.SEEDS3:
        assert {f"rnn-ablation/{label}/seed{seed}" for label in experiments.RNN_ABLATION} <= set(keys)
        assert {f"{name}-variant/frozen/seed{seed}" for name in experiments.LAYOUT_VARIANTS} <= set(keys)
        assert {f"{cell}-{size}/trainable/seed{seed}" for cell, size in experiments.WRITE_UP_SIZES.items()} <= set(keys)
        assert {f"{key}/trainable/seed{seed}" for key in experiments.RECIPE_VARIANTS} <= set(keys)
        assert {f"{key}/trainable/seed{seed}" for key in experiments.VOCAB_CHECK} <= set(keys)
    other = [v for v in helpers.TOKENIZERS if v != helpers.TOKENIZER_VERSION]
    tokens = [job for job in runs if job["tokenizer"] != helpers.TOKENIZER_VERSION]
    assert other and {job["tokenizer"] for job in tokens} == set(other)
    assert {(job["name"], job["finetune"]) for job in tokens} == {(n, f) for n in experiments.TOKENIZER_CHECK for f in (True, False)}
    refits = [job for job in runs if job["refit_of"]]
    assert {job["refit_of"] for job in refits} == {f"{n}/{setting}/seed{s}" for names, setting in (
        (experiments.REFIT, "trainable"), (experiments.FROZEN_REFIT, "frozen")) for n in names for s in experiments.SEEDS3}
    assert all(job["refit_of"] in keys and not job["checkpoint"] for job in refits)
    smoke = experiments.experiment_plan(smoke=True)
    assert [job["key"] for job in smoke] == [job["key"] for job in plan if job.get("seed", 0) == 0]
    assert all(job["settings"]["epochs"] == 1 for job in smoke if job["kind"] == "run")
    assert all(job["settings"]["epochs"] > 1 for job in runs)  # the smoke plan did not change the real one


def test_the_plan_trains_the_size_the_search_found(tmp_path, train_results_tool):
    before = {job["key"] for job in experiments.experiment_plan(out=tmp_path)}
    assert not any(key.startswith("gru-99/") for key in before)
    helpers.save_json({"best_size": 99, "trials": [], "job": {"key": "search/gru"}}, experiments.record_path(tmp_path, "search/gru"))
    helpers.save_json({"best_size": 128, "trials": [], "job": {"key": "search/rnn"}}, experiments.record_path(tmp_path, "search/rnn"))
    after = {job["key"] for job in experiments.experiment_plan(out=tmp_path)}
    assert after - before == {f"gru-99/trainable/seed{seed}" for seed in experiments.SEEDS3}  # 128 is the named model


def test_list_shows_every_job_and_which_are_done(tmp_path, train_results_tool, capsys):
    tool = train_results_tool
    assert tool.main(["--list", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [job["key"].split()[0] for job in experiments.experiment_plan(out=tmp_path)]
    assert len(lines) == len(experiments.experiment_plan(out=tmp_path)) and not any(line.endswith("done") for line in lines)
    tfidf = next(job for job in experiments.experiment_plan(out=tmp_path) if job["key"] == "tfidf")
    helpers.save_json({**made_for(tool, tfidf)}, experiments.record_path(tmp_path, "tfidf"))
    assert tool.main(["--list", "--notebook", "4", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = [job for job in experiments.experiment_plan(out=tmp_path) if job["notebook"] == 4 or job["kind"] == "tfidf"]
    done = [line for line in lines if line.endswith("done")]
    assert len(lines) == len(expected) and len(done) == 1 and done[0].startswith("tfidf ")


def test_workers_write_records_and_checkpoints_that_load_results_reads(toy_data, tmp_path, monkeypatch,
                                                                        train_results_tool, one_thread, capsys):
    tool = train_results_tool
    asked = []

    def toy_imdb(**kwargs):  # the worker's load_imdb: the toy corpus stands in for IMDB
        asked.append(kwargs)
        return toy_data

    monkeypatch.setattr(helpers, "load_imdb", toy_imdb)
    jobs = [job for job in experiments.experiment_plan(smoke=True) if job["notebook"] == 4 or job["kind"] == "tfidf"]
    tool.worker([job["key"] for job in jobs], tmp_path, smoke=True)
    # a smoke run reads 1,000 reviews per split, once per tokenizer its jobs use
    assert asked == [{"subset": 1000, "verbose": False, "tokenizer": v} for v in dict.fromkeys(j["tokenizer"] for j in jobs)]
    lines = capsys.readouterr().out.splitlines()
    assert [line[5:].rsplit(" {", 1)[0] for line in lines if line.startswith("done ")] == [job["key"] for job in jobs]
    results = experiments.load_results(tmp_path)["runs"]
    assert set(results) == {job["key"] for job in jobs}
    saved = set()
    for job in jobs:
        record = results[job["key"]]
        assert record["job"]["key"] == job["key"] and 0 <= record["test_acc"] <= 1
        if job["kind"] != "run":
            continue
        assert f"{job['key']} | epoch  1 | train loss" in "\n".join(lines)  # its epoch line, prefixed with its key
        if job["refit_of"]:  # trained on train + validation for its parent's best epoch: no validation score
            assert record["val_acc"] is None and record["n_train"] == results[job["refit_of"]]["n_train"] + len(toy_data.val)
            assert record["settings"] == {**job["settings"], "patience": None,
                                          "epochs": results[job["refit_of"]]["best_epoch"]}
            continue
        assert record["epochs_run"] == 1 and record["seed"] == 0 and record["settings"] == job["settings"]
        assert record["config"] == {**helpers.DEFAULT_CONFIGS[job["name"]], **job["config"]}
        if job["checkpoint"]:
            path = helpers.checkpoint_path(job["name"], job["finetune"], tmp_path)
            model = helpers.load_checkpoint(path)
            assert model.info.record["test_acc"] == record["test_acc"] and model.info.config == record["config"]
            saved.add(path.name)
    assert {p.name for p in tmp_path.glob("*.pt")} == saved and len(saved) == 8  # 4 models, trainable and frozen


def made_for(tool, job: dict) -> dict:
    """The part of a record `reusable` reads: the job it was made for and, for a training run, the model's config."""
    record = {"job": tool._as_recorded(job)}
    if job["kind"] == "run":
        record["config"] = {**helpers.DEFAULT_CONFIGS[job["name"]], **job["config"]}
    return record


def test_a_rerun_runs_only_the_missing_jobs(tmp_path, monkeypatch, train_results_tool, capsys):
    tool = train_results_tool
    launched = []

    def launch(shares, out, smoke):
        launched.append(([key for share in shares for key in share], len(shares), smoke))
        return [0] * len(shares)

    monkeypatch.setattr(tool, "launch", launch)
    jobs = [job for job in experiments.experiment_plan(out=tmp_path) if job["notebook"] == 4 or job["kind"] == "tfidf"]
    for job in jobs[1:]:
        helpers.save_json({**made_for(tool, job)}, experiments.record_path(tmp_path, job["key"]))
    args = ["--notebook", "4", "--out", str(tmp_path), "--workers", "3"]
    assert tool.main(args) == 0
    assert launched.pop() == ([jobs[0]["key"]], 1, False)  # only the missing job, on one worker
    assert capsys.readouterr().out.startswith(f"1 of {len(jobs)} jobs to run on 1 workers")
    helpers.save_json({**made_for(tool, jobs[0])}, experiments.record_path(tmp_path, jobs[0]["key"]))
    assert tool.main(args) == 0 and not launched  # everything done: nothing starts
    assert capsys.readouterr().out.startswith(f"0 of {len(jobs)} jobs to run")
    changed = next(j for j in jobs if j["kind"] == "run")  # a record made with another recipe is due again
    helpers.save_json({**made_for(tool, changed), "job": {**tool._as_recorded(changed), "settings": {**changed["settings"], "batch_size": 7}}},
                      experiments.record_path(tmp_path, changed["key"]))
    assert tool.main(args) == 0 and launched.pop()[0] == [changed["key"]]
    capsys.readouterr()
    helpers.save_json({**made_for(tool, changed)}, experiments.record_path(tmp_path, changed["key"]))
    assert tool.main(args) == 0 and not launched
    # a model whose default config changed since its record is due again; spelling a default out changes nothing
    monkeypatch.setitem(helpers.DEFAULT_CONFIGS, changed["name"], {**helpers.DEFAULT_CONFIGS[changed["name"]], "hidden": 3})
    assert tool.main(args) == 0 and changed["key"] in launched.pop()[0]
    monkeypatch.undo()
    monkeypatch.setattr(tool, "launch", launch)
    spelt = {**changed, "config": {**changed["config"], "hidden": helpers.DEFAULT_CONFIGS[changed["name"]]["hidden"]}}
    helpers.save_json({**made_for(tool, changed), "job": tool._as_recorded(spelt)}, experiments.record_path(tmp_path, changed["key"]))
    assert tool.main(args) == 0 and not launched
    assert capsys.readouterr().out.startswith(f"0 of {len(jobs)} jobs to run")
    assert tool.main([*args, "--force"]) == 0
    keys, workers, _ = launched.pop()
    assert sorted(keys) == sorted(job["key"] for job in jobs) and workers == 3  # --force redoes all
    assert tool.main([*args, "--smoke"]) == 0
    keys, _, smoke = launched.pop()
    assert smoke is True
    smoke_jobs = [j for j in experiments.experiment_plan(smoke=True, out=tmp_path) if j["notebook"] == 4 or j["kind"] == "tfidf"]
    assert sorted(keys) == sorted(j["key"] for j in smoke_jobs)  # records of other code (none here) are redone
    for job in smoke_jobs[1:]:  # records this code made for these jobs stand in a quick run too
        helpers.save_json({**made_for(tool, job), "code": tool.code_fingerprint()},
                          experiments.record_path(tmp_path, job["key"]))
    assert tool.main([*args, "--smoke"]) == 0
    assert launched.pop()[0] == [smoke_jobs[0]["key"]]
    helpers.save_json({**made_for(tool, smoke_jobs[1]), "code": "other code"},
                      experiments.record_path(tmp_path, smoke_jobs[1]["key"]))  # helpers.py edited since
    assert tool.main([*args, "--smoke"]) == 0
    assert sorted(launched.pop()[0]) == sorted(j["key"] for j in smoke_jobs[:2])

    monkeypatch.setattr(tool, "launch", lambda shares, out, smoke: [0, 1])
    assert tool.main([*args, "--force"]) == 1
    assert "a rerun continues with the missing jobs" in capsys.readouterr().err


def test_the_jobs_are_shared_evenly_longest_first(tmp_path, monkeypatch, train_results_tool, capsys):
    tool = train_results_tool
    shared = []
    monkeypatch.setattr(tool, "launch", lambda shares, out, smoke: shared.extend(shares) or [0] * len(shares))
    assert tool.main(["--out", str(tmp_path), "--workers", "4"]) == 0
    plan = {job["key"]: job for job in experiments.experiment_plan(out=tmp_path)}
    cost = {key: job["cost"] for key, job in plan.items()}
    loads = [sum(cost[key] for key in share) for share in shared]
    assert len(shared) == 4 and sorted(sum(shared, [])) == sorted(cost)
    assert max(loads) - min(loads) <= 2 * max(cost.values())  # no worker waits for another by more than one unit
    for share in shared:
        units = []  # a refit runs right after its parent, on the same worker: the two are one unit
        for key in share:
            if plan[key]["refit_of"] if plan[key]["kind"] == "run" else None:
                assert units[-1][0] == plan[key]["refit_of"]
                units[-1] = (units[-1][0], units[-1][1] + cost[key])
            else:
                units.append((key, cost[key]))
        assert [c for _, c in units] == sorted((c for _, c in units), reverse=True)  # longest first


def test_recompute_relays_the_tool_and_says_how_to_continue(tmp_path, monkeypatch, capsys):
    fake = tmp_path / "root" / "tools" / "train_results.py"
    fake.parent.mkdir(parents=True)
    (fake.parent / "__init__.py").write_text("")  # run as `python -m tools.train_results` from the root
    fake.write_text("import sys\nprint('2 of 2 jobs to run on 1 workers')\nprint('args', *sys.argv[1:])\n"
                    "print('done a')\nprint('done b')\nsys.exit(sys.argv[-1] == '--smoke')\n")
    monkeypatch.setattr(helpers, "ROOT", tmp_path / "root")
    out = tmp_path / "out"
    experiments.recompute(3, out)
    assert capsys.readouterr().out.splitlines() == [
        "2 of 2 jobs to run on 1 workers", f"args --notebook 3 --out {out}", "done a", "done b"]
    with pytest.raises(RuntimeError) as info:
        experiments.recompute(4, out, smoke=True)  # the fake tool fails in a smoke run
    assert str(out) in str(info.value) and "rerun to continue" in str(info.value)
    assert f"args --notebook 4 --out {out} --smoke" in capsys.readouterr().out


@pytest.mark.slow
def test_recompute_smoke_end_to_end(imdb_source, tmp_path, capsys, train_results_tool):
    """RETRAIN=1's tool in a SMOKE_TEST run, for the attn_weighted jobs of notebook 4 (a refit among them): its
    worker processes, records and checkpoints, on 1,000 reviews of the real IMDB, 1 epoch each. (The notebooks'
    own SMOKE_TEST runs take `experiments.recompute`, this tool's relay, through every job of their plans.)"""
    assert train_results_tool.main(["--smoke", "--notebook", "4", "--only", "attn_weighted", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    jobs = [job for job in experiments.experiment_plan(smoke=True)
            if job["notebook"] == 4 and "attn_weighted" in job["key"]]
    assert len(jobs) >= 4 and any(job["refit_of"] for job in jobs)
    assert lines[0].startswith(f"{len(jobs)} of {len(jobs)} jobs to run")
    assert sorted(line[5:].rsplit(" {", 1)[0] for line in lines if line.startswith("done ")) == sorted(j["key"] for j in jobs)
    results = experiments.load_results(tmp_path)["runs"]
    assert set(results) == {job["key"] for job in jobs}
    assert all(r["n_train"] == 1000 and r["epochs_run"] == 1 for r in results.values() if not r["job"]["refit_of"])
    assert all(r["n_train"] == 2000 for r in results.values() if r["job"]["refit_of"])  # train + validation
    model = helpers.load_checkpoint(helpers.checkpoint_path("attn_weighted", folder=tmp_path))
    assert model.info.record["test_acc"] == results["attn_weighted/trainable/seed0"]["test_acc"]


# --- the committed results ---

@lru_cache(maxsize=1)
def committed() -> dict:
    return experiments.load_results()["runs"]


def test_every_committed_run_keeps_which_reviews_it_got_right_and_they_give_its_accuracy():
    """`paired_compare` counts the reviews' noise only where both groups keep per-review flags: every training run
    of the plan must (25,000 test reviews; 5,000 validation reviews unless validation was trained on), and the flags
    must be the recorded accuracies' own."""
    runs = [r for r in committed().values() if r.get("job", {}).get("kind") == "run"]
    assert len(runs) == sum(j["kind"] == "run" for j in experiments.experiment_plan())
    for record in runs:
        test = experiments.unpack_bits(record["correct"]["test"])
        assert len(test) == 25_000 and test.mean() == pytest.approx(record["test_acc"], abs=1e-12), record["job"]["key"]
        if record["val_acc"] is None:  # a refit on training + validation: nothing held out to keep
            assert "val" not in record["correct"], record["job"]["key"]
        else:
            val = experiments.unpack_bits(record["correct"]["val"])
            assert len(val) == 5_000 and val.mean() == pytest.approx(record["val_acc"], abs=1e-12), record["job"]["key"]


def test_committed_records_cover_the_plan(train_results_tool):
    runs = committed()
    for job in experiments.experiment_plan():
        record = runs[job["key"]]
        assert record["job"]["key"] == job["key"] and 0.5 < record["test_acc"] < 1
        if job["kind"] == "run":  # made with today's plan: the job's recipe, config, seed and inputs
            settings = job["settings"]
            if job["refit_of"]:  # trained on train + validation for its parent's best epoch
                settings = {**settings, "epochs": runs[job["refit_of"]]["best_epoch"], "patience": None}
                assert record["val_acc"] is None and record["n_train"] == runs[job["refit_of"]]["n_train"] + 5000
            assert record["seed"] == job["seed"] and record["settings"] == settings
            assert experiments.full_config(job["name"], record["config"], named=False) == experiments.full_config(
                job["name"], job["config"]), job["key"]  # the same model, whether a default is spelt out or not
            assert (record["tokenizer"], record["split"]) == (job["tokenizer"], helpers.SPLIT_VERSION)
            if not job["refit_of"] and job["settings"]["patience"] is not None:  # patience, not a cap, ended it
                assert record["epochs_run"] < job["settings"]["epochs"], job["key"]
            elif not job["refit_of"]:  # a fixed number of epochs (the published recipe): all of them, the last kept
                assert record["epochs_run"] == job["settings"]["epochs"], job["key"]
    for cell in ("rnn", "gru"):  # notebook 03's search: the objective is the mean over the seeds
        trials = runs[f"search/{cell}"]["trials"]
        assert trials and all(isinstance(t["hidden"], int) for t in trials)
        for t in trials:
            if t["state"] == "complete" and t["repeat_of"] is None:
                assert t["value"] == pytest.approx(np.mean(t["seed_values"]), abs=1e-4)
    # each record keeps its 30,000 predicted labels packed in bits (about 5 kB): the whole folder stays small
    assert sum(p.stat().st_size for p in (helpers.CHECKPOINT_DIR / "runs").iterdir()) < 3_000_000


def test_every_committed_checkpoint_is_a_named_model():
    expected = {helpers.checkpoint_path(name, finetune) for name in helpers.MODEL_NAMES for finetune in (True, False)}
    assert set(helpers.CHECKPOINT_DIR.glob("*.pt")) == expected


@pytest.mark.parametrize("finetune", [True, False], ids=["trainable", "frozen"])
@pytest.mark.parametrize("name", helpers.MODEL_NAMES)
def test_committed_checkpoints_load_and_match_their_records(name, finetune):
    path = helpers.checkpoint_path(name, finetune)
    assert path.exists(), f"{path} is missing: python -m tools.train_results --only {name}/"
    assert path.stat().st_size <= 2_000_000
    model = helpers.load_checkpoint(path)
    record = committed()[f"{name}/{'trainable' if finetune else 'frozen'}/seed0"]
    for key in ("test_acc", "val_acc", "history", "writeup_probs", "settings", "config"):
        assert model.info.record[key] == record[key], key  # seed 0 of the records is this checkpoint
    # trained with today's recipe: the named architecture and settings
    config, settings = helpers.recipe(name, finetune)
    assert model.info.name == name and model.info.config == {**helpers.DEFAULT_CONFIGS[name], **config}
    assert model.info.record["settings"] == settings and model.info.tokenizer == helpers.TOKENIZER_VERSION
    assert model.finetune == finetune and (model.delta is not None) == finetune
    p = helpers.predict(model, ["an absolute masterpiece, i loved every minute of it",
                                "the worst film i have ever seen, a boring waste of time"])
    assert p[0] > 0.5 > p[1]
    np.testing.assert_allclose(helpers.predict(model, list(helpers.WRITEUP_REVIEWS)), record["writeup_probs"],
                               atol=2e-3)  # its stored predictions are reproduced (Δ is stored in float16)


def test_the_committed_checkpoint_reproduces_its_test_accuracy(real_imdb, one_thread):
    model = helpers.load_checkpoint(helpers.checkpoint_path("weighted"))
    assert helpers.evaluate(model, real_imdb.test)["acc"] == committed()["weighted/trainable/seed0"]["test_acc"]


def test_the_readme_table_is_the_committed_records():
    from tools import readme_table as tool

    results = experiments.load_results()
    assert tool.peer_table(results) in (helpers.ROOT / "README.md").read_text(), "README.md's table is stale"
    table = tool.markdown_table(results)
    assert table in (helpers.ROOT / "README.md").read_text(), "README.md's table is stale: python -m tools.readme_table"
    for name in helpers.MODEL_NAMES:  # each row's test accuracies, recomputed here from the raw records
        row = next(line for line in table.splitlines() if line.startswith(f"| {tool.LABELS[name]} |"))
        for setting in ("trainable", "frozen"):
            acc = np.array([r["test_acc"] for key, r in results["runs"].items() if key.startswith(f"{name}/{setting}/seed")])
            assert len(acc) == 5 and f"{100 * acc.mean():.1f} ± {100 * acc.std(ddof=1):.1f} %" in row, (name, setting, row)


def test_add_correctness_redoes_only_the_runs_whose_records_lack_it(tmp_path, train_results_tool):
    job = experiments.job("gru/frozen/seed0", "gru", 3, 0, False)
    assert not train_results_tool.lacks_correctness(job, tmp_path)  # no record: due anyway, not for this reason
    helpers.save_json({"val_acc": 0.8}, experiments.record_path(tmp_path, job["key"]))
    assert train_results_tool.lacks_correctness(job, tmp_path)
    helpers.save_json({"val_acc": 0.8, "correct": {}}, experiments.record_path(tmp_path, job["key"]))
    assert not train_results_tool.lacks_correctness(job, tmp_path)
    assert not train_results_tool.lacks_correctness({"key": "tfidf", "kind": "tfidf"}, tmp_path)
