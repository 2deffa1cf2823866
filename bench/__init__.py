"""The benchmark harness (``bench/run.py``, ``make bench``); see bench/README.md."""
