"""What notebooks 03 and 04 report: the statistics (`stats`), the measurements read off models and data
(`analysis`), the run records and their queries (`records`), the plan of jobs and its key grammar (`plan`), the
hyper-parameter search (`search`) and the recompute path (`recompute`: `python -m experiments.recompute`). The names
the notebooks use most are here too. Imports `helpers` (the models and data); `helpers` never imports this package.
"""
import importlib

from experiments import analysis, plan, records, search, stats
from experiments.plan import ATTN_ABLATION, RNN_ABLATION, SEEDS, SEEDS3, experiment_plan, full_config, tfidf_baseline
from experiments.records import (
    PUBLISHED_SOLUTIONS,
    STUDENT_RUN,
    Ledger,
    Results,
    RunRecord,
    compare,
    compare_groups,
    course_results,
    results_folder,
    results_table,
    run_summary,
)
from experiments.search import make_study, optuna_storage, run_study, search_minutes, trial_records, trial_table
from experiments.stats import (
    Comparison,
    adjust_for_family,
    family_report,
    format_mean_std,
    mean_std,
    unpaired_compare,
)

__all__ = ["analysis", "plan", "records", "search", "stats", "ATTN_ABLATION", "RNN_ABLATION", "SEEDS", "SEEDS3",
           "experiment_plan", "full_config", "tfidf_baseline", "PUBLISHED_SOLUTIONS", "STUDENT_RUN", "Ledger",
           "Results", "RunRecord", "compare", "compare_groups", "course_results", "results_folder", "results_table",
           "run_summary", "make_study", "optuna_storage", "run_study", "search_minutes", "trial_records",
           "trial_table", "Comparison", "adjust_for_family", "family_report", "format_mean_std", "mean_std",
           "unpaired_compare", "recompute", "load_or_train", "check_exercises", "STUDENT_MODELS", "NOTEBOOK_MODELS"]

_FROM_RECOMPUTE = ("load_or_train", "check_exercises", "STUDENT_MODELS", "NOTEBOOK_MODELS")


def __getattr__(name: str):
    """`recompute` and its names, imported when first asked for (importing them here would make
    `python -m experiments.recompute` find its own module imported already)."""
    if name == "recompute" or name in _FROM_RECOMPUTE:
        module = importlib.import_module("experiments.recompute")
        return module if name == "recompute" else getattr(module, name)
    raise AttributeError(f"module 'experiments' has no attribute {name!r}")
