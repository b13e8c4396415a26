# Environment of the recipe: the repository's virtual environment (tools/setup.sh makes it) if present.
# shellcheck disable=SC1091
if [ -f ../../.venv/bin/activate ]; then
  . ../../.venv/bin/activate
fi
export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
