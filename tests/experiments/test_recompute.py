"""The one recompute path (`python -m experiments.recompute`): the workers and their records and checkpoints,
resuming, sharing the jobs, the notebooks' launcher (`rerun`), and `load_or_train`, which gets one model for a
notebook's section."""

import pytest

import helpers
from ex2 import runtime
from ex2.checkpoints import checkpoint_path, load_checkpoint
from ex2.models import DEFAULT_CONFIGS
from experiments import plan, recompute, records


def test_load_or_train_trains_once_prints_its_epochs_and_then_loads(toy_data, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SMOKE_TEST", raising=False)
    bars, progress = [], runtime.progress_bar

    def recorded(*args, **kwargs):
        bars.append((kwargs.get("desc"), kwargs.get("disable")))
        return progress(*args, **kwargs)

    monkeypatch.setattr(runtime, "progress_bar", recorded)  # where training draws its bars
    model = recompute.load_or_train("weighted", toy_data, folder=tmp_path)
    record = records.RunRecord.from_dict(model.info.record)
    history = helpers.History(**record.history)
    epochs = range(1, record.epochs_run + 1)
    assert capsys.readouterr().out.splitlines() == [history.line(e) for e in epochs]  # one line per epoch
    epochs_planned = helpers.recipe("weighted")[1]["epochs"]
    assert bars == [(f"epoch {e}/{epochs_planned}", None) for e in epochs]  # and a bar (None: shown where it can be)
    assert record.seed == 0 and record.settings == helpers.recipe("weighted")[1]  # the named recipe
    right = (helpers.predict_split(model, toy_data.test) > 0.5) == toy_data.test.labels.numpy().astype(bool)
    assert record.test_acc == pytest.approx(right.mean())
    path = checkpoint_path("weighted", folder=tmp_path)
    assert path.exists()

    def no_training(*args, **kwargs):
        raise AssertionError("load_or_train trained although the checkpoint exists")

    monkeypatch.setattr(helpers, "train_model", no_training)
    again = recompute.load_or_train("weighted", toy_data, folder=tmp_path)
    assert again.info == model.info and capsys.readouterr().out == ""


def test_load_or_train_never_saves_in_a_smoke_run(toy_data, tmp_path, monkeypatch):
    monkeypatch.setenv("SMOKE_TEST", "1")
    folder = tmp_path / "checkpoints"
    model = recompute.load_or_train("sum", toy_data, trainable=False, folder=folder)
    assert model.delta is None and model.info.record["config"]["trainable"] is False
    assert not folder.exists() or not list(folder.iterdir())



def test_list_shows_every_job_and_which_are_done(tmp_path, capsys):
    tool = recompute
    assert tool.main(["--list", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [job["key"].split()[0] for job in plan.experiment_plan(out=tmp_path)]
    assert len(lines) == len(plan.experiment_plan(out=tmp_path)) and not any(line.endswith("done") for line in lines)
    tfidf = next(job for job in plan.experiment_plan(out=tmp_path) if job["key"] == "tfidf")
    runtime.save_json({**made_for(tool, tfidf)}, plan.record_path(tmp_path, "tfidf"))
    assert tool.main(["--list", "--notebook", "4", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = [job for job in plan.experiment_plan(out=tmp_path) if job["notebook"] == 4 or job["kind"] == "tfidf"]
    done = [line for line in lines if line.endswith("done")]
    assert len(lines) == len(expected) and len(done) == 1 and done[0].startswith("tfidf ")


def test_workers_write_records_and_checkpoints_that_results_load_reads(toy_data, tmp_path, monkeypatch,
                                                                        one_thread, capsys):
    tool = recompute
    asked = []

    def toy_imdb(**kwargs):  # the worker's load_imdb: the toy corpus stands in for IMDB
        asked.append(kwargs)
        return toy_data

    monkeypatch.setattr(helpers, "load_imdb", toy_imdb)
    jobs = [job for job in plan.experiment_plan(smoke=True) if job["notebook"] == 4 or job["kind"] == "tfidf"]
    tool.worker([job["key"] for job in jobs], tmp_path, smoke=True)
    # a smoke run reads 1,000 reviews per split, once per tokenizer its jobs use
    versions = dict.fromkeys(j["tokenizer"] for j in jobs)
    assert asked == [{"subset": 1000, "verbose": False, "tokenizer": v} for v in versions]
    lines = capsys.readouterr().out.splitlines()
    assert [line[5:].rsplit(" {", 1)[0] for line in lines if line.startswith("done ")] == [job["key"] for job in jobs]
    results = records.Results.load(tmp_path).runs
    assert set(results) == {job["key"] for job in jobs}
    saved = set()
    for job in jobs:
        record = results[job["key"]]
        assert record.key == job["key"] and 0 <= record.test_acc <= 1
        if job["kind"] != "run":
            continue
        assert f"{job['key']} | epoch  1 | train loss" in "\n".join(lines)  # its epoch line, prefixed with its key
        if job["refit_of"]:  # trained on train + validation for its parent's best epoch: no validation score
            assert record.val_acc is None and "val" not in record.correct
            assert record.n_train == results[job["refit_of"]].n_train + len(toy_data.val)
            assert record.settings == {**job["settings"], "patience": None,
                                       "epochs": results[job["refit_of"]].best_epoch}
            continue
        assert record.epochs_run == 1 and record.seed == 0 and record.settings == job["settings"]
        assert record.config == {**DEFAULT_CONFIGS[job["name"]], **job["config"]}
        if job["checkpoint"]:
            path = checkpoint_path(job["name"], job["trainable"], tmp_path)
            model = load_checkpoint(path)
            assert model.info.record["test_acc"] == record.test_acc and model.info.config == record.config
            saved.add(path.name)
    assert {p.name for p in tmp_path.glob("*.pt")} == saved and len(saved) == 8  # 4 models, trainable and frozen


def made_for(tool, job: dict) -> dict:
    """The part of a record `reusable` reads: the job it was made for and, for a training run, the model's config."""
    record = {"job": tool._as_recorded(job)}
    if job["kind"] == "run":
        record["config"] = {**DEFAULT_CONFIGS[job["name"]], **job["config"]}
    return record


def test_a_rerun_runs_only_the_missing_jobs(tmp_path, monkeypatch, capsys):
    tool = recompute
    launched = []

    def launch(shares, out, smoke):
        launched.append(([key for share in shares for key in share], len(shares), smoke))
        return [0] * len(shares)

    monkeypatch.setattr(tool, "launch", launch)
    jobs = [job for job in plan.experiment_plan(out=tmp_path) if job["notebook"] == 4 or job["kind"] == "tfidf"]
    for job in jobs[1:]:
        runtime.save_json({**made_for(tool, job)}, plan.record_path(tmp_path, job["key"]))
    args = ["--notebook", "4", "--out", str(tmp_path), "--workers", "3"]
    assert tool.main(args) == 0
    assert launched.pop() == ([jobs[0]["key"]], 1, False)  # only the missing job, on one worker
    assert capsys.readouterr().out.startswith(f"1 of {len(jobs)} jobs to run on 1 workers")
    runtime.save_json({**made_for(tool, jobs[0])}, plan.record_path(tmp_path, jobs[0]["key"]))
    assert tool.main(args) == 0 and not launched  # everything done: nothing starts
    assert capsys.readouterr().out.startswith(f"0 of {len(jobs)} jobs to run")
    changed = next(j for j in jobs if j["kind"] == "run")  # a record made with another recipe is due again
    other_recipe = {**tool._as_recorded(changed), "settings": {**changed["settings"], "batch_size": 7}}
    runtime.save_json({**made_for(tool, changed), "job": other_recipe}, plan.record_path(tmp_path, changed["key"]))
    assert tool.main(args) == 0 and launched.pop()[0] == [changed["key"]]
    capsys.readouterr()
    runtime.save_json({**made_for(tool, changed)}, plan.record_path(tmp_path, changed["key"]))
    assert tool.main(args) == 0 and not launched
    # a model whose default config changed since its record is due again; spelling a default out changes nothing
    bigger = {**DEFAULT_CONFIGS[changed["name"]], "hidden": 3}
    monkeypatch.setitem(DEFAULT_CONFIGS, changed["name"], bigger)
    assert tool.main(args) == 0 and changed["key"] in launched.pop()[0]
    monkeypatch.undo()
    monkeypatch.setattr(tool, "launch", launch)
    spelt = {**changed, "config": {**changed["config"], "hidden": DEFAULT_CONFIGS[changed["name"]]["hidden"]}}
    runtime.save_json({**made_for(tool, changed), "job": tool._as_recorded(spelt)},
                      plan.record_path(tmp_path, changed["key"]))
    assert tool.main(args) == 0 and not launched
    assert capsys.readouterr().out.startswith(f"0 of {len(jobs)} jobs to run")
    assert tool.main([*args, "--force"]) == 0
    keys, workers, _ = launched.pop()
    assert sorted(keys) == sorted(job["key"] for job in jobs) and workers == 3  # --force redoes all
    assert tool.main([*args, "--smoke"]) == 0
    keys, _, smoke = launched.pop()
    assert smoke is True
    smoke_jobs = [j for j in plan.experiment_plan(smoke=True, out=tmp_path)
                  if j["notebook"] == 4 or j["kind"] == "tfidf"]
    assert sorted(keys) == sorted(j["key"] for j in smoke_jobs)  # records of other code (none here) are redone
    for job in smoke_jobs[1:]:  # records this code made for these jobs stand in a quick run too
        runtime.save_json({**made_for(tool, job), "code": tool.code_fingerprint()},
                          plan.record_path(tmp_path, job["key"]))
    assert tool.main([*args, "--smoke"]) == 0
    assert launched.pop()[0] == [smoke_jobs[0]["key"]]
    runtime.save_json({**made_for(tool, smoke_jobs[1]), "code": "other code"},
                      plan.record_path(tmp_path, smoke_jobs[1]["key"]))  # helpers.py edited since
    assert tool.main([*args, "--smoke"]) == 0
    assert sorted(launched.pop()[0]) == sorted(j["key"] for j in smoke_jobs[:2])

    monkeypatch.setattr(tool, "launch", lambda shares, out, smoke: [0, 1])
    assert tool.main([*args, "--force"]) == 1
    assert "a rerun continues with the missing jobs" in capsys.readouterr().err


def test_the_jobs_are_shared_evenly_longest_first(tmp_path, monkeypatch, capsys):
    tool = recompute
    shared = []
    monkeypatch.setattr(tool, "launch", lambda shares, out, smoke: shared.extend(shares) or [0] * len(shares))
    assert tool.main(["--out", str(tmp_path), "--workers", "4"]) == 0
    jobs = {job["key"]: job for job in plan.experiment_plan(out=tmp_path)}
    cost = {key: job["cost"] for key, job in jobs.items()}
    loads = [sum(cost[key] for key in share) for share in shared]
    assert len(shared) == 4 and sorted(sum(shared, [])) == sorted(cost)
    assert max(loads) - min(loads) <= 2 * max(cost.values())  # no worker waits for another by more than one unit
    for share in shared:
        units = []  # a refit runs right after its parent, on the same worker: the two are one unit
        for key in share:
            if jobs[key]["refit_of"] if jobs[key]["kind"] == "run" else None:
                assert units[-1][0] == jobs[key]["refit_of"]
                units[-1] = (units[-1][0], units[-1][1] + cost[key])
            else:
                units.append((key, cost[key]))
        assert [c for _, c in units] == sorted((c for _, c in units), reverse=True)  # longest first


def test_rerun_relays_the_recompute_and_says_how_to_continue(tmp_path, monkeypatch, capsys):
    fake = tmp_path / "root" / "fake_recompute.py"  # stands in for this module, started the same way
    fake.parent.mkdir(parents=True)
    fake.write_text("import sys\nprint('2 of 2 jobs to run on 1 workers')\nprint('args', *sys.argv[1:])\n"
                    "print('done a')\nprint('done b')\nsys.exit(sys.argv[-1] == '--smoke')\n")
    assert recompute.MODULE == "experiments.recompute"  # derived from the module itself, not spelt out
    monkeypatch.setattr(recompute, "MODULE", "fake_recompute")
    monkeypatch.setattr(runtime, "ROOT", tmp_path / "root")
    out = tmp_path / "out"
    recompute.rerun(3, out)
    assert capsys.readouterr().out.splitlines() == [
        "2 of 2 jobs to run on 1 workers", f"args --notebook 3 --out {out}", "done a", "done b"]
    with pytest.raises(RuntimeError) as info:
        recompute.rerun(4, out, smoke=True)  # the fake tool fails in a smoke run
    assert str(out) in str(info.value) and "rerun to continue" in str(info.value)
    assert f"args --notebook 4 --out {out} --smoke" in capsys.readouterr().out


E2E_JOBS = ("attn_weighted/trainable", "attn_weighted-refit/trainable", "attn_weighted/frozen")
"""The end-to-end run's selection (`--only`, repeated): two units for the two workers, a checkpoint each, a refit
after its parent. Every other job of the plan runs through the same `run_job` in
test_workers_write_records_and_checkpoints_that_results_load_reads, on the toy corpus."""


@pytest.mark.slow
def test_recompute_smoke_end_to_end(imdb_source, tmp_path, capsys):
    """RUN_MODE=full's recompute in a SMOKE_TEST run, for three attn_weighted jobs of notebook 4 (trainable and frozen
    seed 0, each with its checkpoint, and the trainable refit): two worker processes, their records and checkpoints,
    on 1,000 reviews of the real IMDB, 1 epoch each."""
    only = [arg for key in E2E_JOBS for arg in ("--only", key)]
    assert recompute.main(["--smoke", "--notebook", "4", *only, "--out", str(tmp_path), "--workers", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    jobs = [job for job in plan.experiment_plan(smoke=True)
            if job["notebook"] == 4 and any(key in job["key"] for key in E2E_JOBS)]
    assert len(jobs) == 3 and [job["refit_of"] for job in jobs if job["refit_of"]] == ["attn_weighted/trainable/seed0"]
    assert lines[0].startswith(f"{len(jobs)} of {len(jobs)} jobs to run on 2 workers")
    done = sorted(line[5:].rsplit(" {", 1)[0] for line in lines if line.startswith("done "))
    assert done == sorted(j["key"] for j in jobs)
    results = records.Results.load(tmp_path).runs
    assert set(results) == {job["key"] for job in jobs}
    assert all(r.n_train == 1000 and r.epochs_run == 1 for r in results.values() if not r.job["refit_of"])
    assert all(r.n_train == 2000 for r in results.values() if r.job["refit_of"])  # train + validation
    for trainable in (True, False):
        model = load_checkpoint(checkpoint_path("attn_weighted", trainable, folder=tmp_path))
        key = f"attn_weighted/{'trainable' if trainable else 'frozen'}/seed0"
        assert model.info.record["test_acc"] == results[key].test_acc


def test_add_correctness_redoes_only_the_runs_whose_records_lack_it(tmp_path):
    job = plan.job("gru/frozen/seed0", "gru", 3, 0, False)
    assert not recompute.lacks_correctness(job, tmp_path)  # no record: due anyway, not for this reason
    runtime.save_json({"val_acc": 0.8}, plan.record_path(tmp_path, job["key"]))
    assert recompute.lacks_correctness(job, tmp_path)
    runtime.save_json({"val_acc": 0.8, "correct": {}}, plan.record_path(tmp_path, job["key"]))
    assert not recompute.lacks_correctness(job, tmp_path)
    assert not recompute.lacks_correctness({"key": "tfidf", "kind": "tfidf"}, tmp_path)
