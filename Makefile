# The two commands of the README: `make recipe` (the main job) and `make test`.
# Both set up .venv/ first (tools/setup.sh; a ready environment returns at once).
PY := .venv/bin/python

.PHONY: setup test recipe bench
setup:
	tools/setup.sh

test: setup
	$(PY) -m pytest -q --durations=20 tests

recipe: setup
	cd egs/librispeech && ./run.sh

bench: setup
	$(PY) bench/step_overhead.py
