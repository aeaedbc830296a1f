"""What the assignment is: its graded questions (questions.py, shipped to students and read by the grader), the
release maker (`python -m assignment.make_release OUT`) and the files only the release has (student/)."""
