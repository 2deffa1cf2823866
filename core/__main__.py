"""``python -m core``: the ``projectionist`` command line (how :mod:`core.supervisor` starts
its runner processes, with the interpreter that runs it)."""

from core.cli import app

app(prog_name="projectionist")
