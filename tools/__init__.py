"""Maintainer commands, run from the repository root as modules, e.g. `python -m tools.readme_table` (README.md,
"Maintainer commands"). The grader and the student release have packages of their own: grader/ and assignment/."""
