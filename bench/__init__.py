"""Benchmarks (issue 5 load, issue 6 speed): `python -m bench --help`. Never timed unit tests."""
