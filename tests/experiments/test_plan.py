"""The plan of jobs behind notebooks 03 and 04: every group the notebooks read, each job's recipe, the smoke
version, the searched sizes, and where each job's record lives (the key grammar)."""
import json

import pytest

import helpers
from ex2 import runtime
from ex2.checkpoints import checkpoint_path
from experiments import plan


def test_the_plan_has_one_checkpoint_per_named_model_and_a_smoke_version():
    jobs = plan.experiment_plan()
    keys = [job["key"] for job in jobs]
    assert len(set(keys)) == len(keys)
    runs = [job for job in jobs if job["kind"] == "run"]
    checkpoints = [checkpoint_path(job["name"], job["trainable"]) for job in runs if job["checkpoint"]]
    assert sorted(checkpoints) == sorted(checkpoint_path(name, trainable) for name in helpers.MODEL_NAMES
                                         for trainable in (True, False))
    for job in runs:
        config, settings = helpers.recipe(job["name"], job["trainable"])
        assert job["config"].items() >= config.items()  # variants change the recipe, never drop it
        if job["checkpoint"]:  # the committed model is the named recipe, seed 0
            assert job["seed"] == 0 and job["config"] == config and job["settings"] == settings
    # what the notebooks read, written out here rather than rebuilt from the plan's own constants
    assert plan.SEEDS == (0, 1, 2, 3, 4) and plan.SEEDS3 == (0, 1, 2)
    assert {"gru/trainable/seed4", "attn_weighted/frozen/seed4", "rnn-64/frozen/seed4", "gru-64/trainable/seed0",
            "attn_sum-variant/trainable/seed4", "attn_weighted-variant/frozen/seed2",
            "rnn-ablation/trainable, lr 3e-3/seed2", "rnn-ablation/frozen GloVe, default W_hh/seed0",
            "weighted-decay/trainable/seed4", "sum-batch128/trainable/seed2",
            "gru-107/trainable/seed2", "rnn-86/trainable/seed0", "tokens-glove6b-v1/attn_weighted/frozen/seed2",
            "gru-vocab2/trainable/seed1", "attn_weighted-refit/trainable/seed2", "tfidf", "tokens-glove6b-v1/tfidf",
            "ablation/attn_sum/published, sum/frozen/seed2",
            "ablation/attn_weighted/published, residual layout/frozen/seed0",
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
    for seed in plan.SEEDS:  # the headline comparisons: every named model both ways, 64 vs 128, the layouts
        assert {f"{name}/{setting}/seed{seed}" for name in helpers.MODEL_NAMES
                for setting in ("trainable", "frozen")} <= set(keys)
        assert {f"{cell}-64/{setting}/seed{seed}" for cell in ("rnn", "gru")
                for setting in ("trainable", "frozen")} <= set(keys)
        assert {f"{name}-variant/trainable/seed{seed}" for name in plan.LAYOUT_VARIANTS} <= set(keys)
    for seed in plan.SEEDS3:
        assert {f"rnn-ablation/{label}/seed{seed}" for label in plan.RNN_ABLATION} <= set(keys)
        assert {f"{name}-variant/frozen/seed{seed}" for name in plan.LAYOUT_VARIANTS} <= set(keys)
        assert {f"{cell}-{size}/trainable/seed{seed}" for cell, size in plan.WRITE_UP_SIZES.items()} <= set(keys)
        assert {f"{name}-{v}/trainable/seed{seed}" for v, (name, *_) in plan.RECIPE_VARIANTS.items()} <= set(keys)
        assert {f"{name}-{v}/trainable/seed{seed}" for v, (name, _) in plan.VOCAB_CHECK.items()} <= set(keys)
    other = [v for v in helpers.TOKENIZERS if v != helpers.TOKENIZER_VERSION]
    tokens = [job for job in runs if job["tokenizer"] != helpers.TOKENIZER_VERSION]
    assert other and {job["tokenizer"] for job in tokens} == set(other)
    assert {(job["name"], job["trainable"]) for job in tokens} == {(n, f) for n in plan.TOKENIZER_CHECK
                                                                  for f in (True, False)}
    refits = [job for job in runs if job["refit_of"]]
    assert {job["refit_of"] for job in refits} == {f"{n}/{setting}/seed{s}" for names, setting in (
        (plan.REFIT, "trainable"), (plan.FROZEN_REFIT, "frozen")) for n in names for s in plan.SEEDS3}
    assert all(job["refit_of"] in keys and not job["checkpoint"] for job in refits)
    smoke = plan.experiment_plan(smoke=True)
    assert [job["key"] for job in smoke] == [job["key"] for job in jobs if job.get("seed", 0) == 0]
    assert all(job["settings"]["epochs"] == 1 for job in smoke if job["kind"] == "run")
    assert all(job["settings"]["epochs"] > 1 for job in runs)  # the smoke plan did not change the real one


def test_the_plan_trains_the_size_the_search_found(tmp_path):
    before = {job["key"] for job in plan.experiment_plan(out=tmp_path)}
    assert not any(key.startswith("gru-99/") for key in before)
    for cell, size in (("gru", 99), ("rnn", 128)):
        record = {"best_size": size, "trials": [], "job": {"key": f"search/{cell}"}}
        runtime.save_json(record, plan.record_path(tmp_path, plan.search_key(cell)))
    after = {job["key"] for job in plan.experiment_plan(out=tmp_path)}
    assert after - before == {f"gru-99/trainable/seed{seed}" for seed in plan.SEEDS3}  # 128 is the named model



def test_record_files_are_written_atomically_and_named_after_the_key(tmp_path):
    assert plan.record_path(tmp_path, "gru/trainable/seed0") == tmp_path / "runs" / "gru__trainable__seed0.json"
    keys = [job["key"] for job in plan.experiment_plan()] + ["search/rnn", "search/gru"]
    paths = {plan.record_path(tmp_path, key) for key in keys}
    assert len(paths) == len(keys) and {p.parent for p in paths} == {tmp_path / "runs"}  # one file per job
    path = runtime.save_json({"job": {"key": "a/b"}, "acc": 0.5}, plan.record_path(tmp_path, "a/b"))
    assert runtime.load_json(path, "a record", "rerun it") == {"job": {"key": "a/b"}, "acc": 0.5}
    with pytest.raises(RuntimeError, match="disk full"):
        with runtime.atomic_path(path) as tmp:
            tmp.write_text("{half a rec")
            raise RuntimeError("disk full")
    assert json.loads(path.read_text())["acc"] == 0.5  # the old file is untouched, no temporary file is left
    assert [p.name for p in path.parent.iterdir()] == [path.name]



def test_the_key_grammar_spells_every_group_of_the_plan():
    keys = {job["key"] for job in plan.experiment_plan()}
    groups = {plan.group_of(key) for key in keys if key.rsplit("/", 1)[-1].startswith("seed")}
    spelt = {plan.group_key(name, setting) for name in helpers.MODEL_NAMES for setting in plan.SETTINGS}
    spelt |= {plan.group_key(cell, setting, 64) for cell in ("rnn", "gru") for setting in plan.SETTINGS}
    spelt |= {plan.group_key("rnn", "trainable", ablation=label) for label in plan.RNN_ABLATION}
    spelt |= {plan.group_key(name, "frozen", ablation=label) for name, rows in plan.ATTN_ABLATION.items()
              for label in rows}
    spelt |= {plan.group_key(name, setting, "variant") for name in plan.LAYOUT_VARIANTS for setting in plan.SETTINGS}
    spelt |= {plan.group_key(name, setting, "window0") for name in plan.WINDOW0 for setting in plan.SETTINGS}
    spelt |= {plan.group_key(name, "trainable", variant) for variant, (name, *_) in plan.RECIPE_VARIANTS.items()}
    spelt |= {plan.group_key(cell, "trainable", size) for cell, size in plan.WRITE_UP_SIZES.items()}
    spelt |= {plan.group_key(cell, "trainable", size) for cell in plan.WRITE_UP_SIZES
              if (size := plan.searched_size(runtime.CHECKPOINT_DIR, cell)) not in (None, 64, 128)}
    spelt |= {plan.group_key(name, setting, tokenizer=v) for name in plan.TOKENIZER_CHECK for setting in plan.SETTINGS
              for v in helpers.TOKENIZERS if v != helpers.TOKENIZER_VERSION}
    spelt |= {plan.group_key(name, "trainable", variant) for variant, (name, _) in plan.VOCAB_CHECK.items()}
    spelt |= {plan.group_key(name, "trainable", "refit") for name in plan.REFIT}
    spelt |= {plan.group_key(name, "frozen", "refit") for name in plan.FROZEN_REFIT}
    assert groups == spelt  # every group the plan trains is one the grammar spells, and no other
    assert plan.group_key("gru", "frozen", tokenizer=helpers.TOKENIZER_VERSION) == "gru/frozen"  # the default
    assert plan.run_key("gru-64/frozen", 3) == "gru-64/frozen/seed3"
    assert plan.group_of("gru-64/frozen/seed3") == "gru-64/frozen"
    assert {plan.anchor_key(), plan.anchor_key("glove6b-v1"), plan.anchor_key(helpers.TOKENIZER_VERSION)} <= keys
    with pytest.raises(ValueError, match="trainable"):
        plan.group_key("gru", "finetuned")
