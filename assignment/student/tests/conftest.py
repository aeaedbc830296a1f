"""The self-checks' short test summary shows each failure's whole message (pytest cuts it to the terminal's width
unless run with -vv), so a missing part reads in full:
`... - ex2.layers.Unimplemented: implement RNNCell.update ...`."""
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_terminal_summary(terminalreporter, config):
    config.option.verbose = max(config.option.verbose, 2)  # read only by the short summary, printed after this hook
