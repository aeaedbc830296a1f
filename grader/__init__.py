"""The grader of exercise 2 (`python -m grader`; Gradescope: `python -m grader.gradescope`). It is never shipped to
students: the release leaves this folder out."""
