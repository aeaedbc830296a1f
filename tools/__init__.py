"""Maintainer commands, run from the repository root as modules, e.g. `python -m tools.readme_table` (README.md,
"Maintainer commands"). The grader's sandboxed child is the one exception by design: it is started as a plain
script inside the sandbox, where it sees nothing of this package but itself and the notebook runner."""
