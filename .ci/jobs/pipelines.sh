#!/usr/bin/env bash
# CI job "pipelines": fastprop inside Dask and Spark (tests/test_dask.py, tests/test_spark.py).
# Runs from the repo root inside the venv that .ci/run activated, after the main test command
# (where these two modules skip: their packages are installed only here).
#   - Java: Spark needs a JRE; installed through apt-get when `java` is missing.
#   - dask[distributed], dask-ml, pyspark, pyarrow into the CI venv (pyspark builds from a
#     large sdist: about a minute).
#   - the two modules, with every test required to run (a skip fails the job).
# Workers use one BLAS thread each (the tests set it; exported here too). ~2-3 min on 2 cores.
set -euo pipefail

if ! command -v java >/dev/null 2>&1; then
    sudo_=""
    if [ "$(id -u)" -ne 0 ]; then sudo_="sudo"; fi
    $sudo_ apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q --no-install-recommends \
        openjdk-17-jre-headless
fi
java -version

python -m pip install -q "dask[distributed]" dask-ml pyspark pyarrow pandas scikit-learn
python -c "import dask, distributed, dask_ml, pyspark, pyarrow
print('dask', dask.__version__, '/ pyspark', pyspark.__version__)"

export OPENBLAS_NUM_THREADS=1
log="$(mktemp)"
python -m pytest tests/test_dask.py tests/test_spark.py -q -rs -p no:cacheprovider | tee "$log"
if grep -Eq "[0-9]+ skipped" "$log"; then
    echo "pipelines: tests were skipped; every Dask / Spark test must run here" >&2
    exit 1
fi
