# Sourced by the device scripts (device_scaling.sh, device_probe.sh): the carried wheels installed, the carried
# corpus written out COPIES times as JSON Lines in /tmp/corpus, and WORKERS, SITE, TOK set.
# NO_WHEELS=1 skips the install (to try a script here, with .venv-fast's python3 first on PATH).
WORKERS=${WORKERS:-16} COPIES=${COPIES:-4} INPUTS=${INPUTS:-.bench/*.jsonl.gz}
SITE=/tmp/site
TOK=.bench/gpt2.tokenizer.json
[ -n "${NO_WHEELS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || exit 1
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1
python3 -c "import tokenizers, pyarrow, numpy, numba, isal; print('tokenizers', tokenizers.__version__, 'pyarrow', \
pyarrow.__version__, 'numpy', numpy.__version__, 'numba', numba.__version__)"
nproc
rm -rf /tmp/corpus && mkdir -p /tmp/corpus
for i in $(seq "$COPIES"); do for f in $INPUTS; do zcat "$f" > "/tmp/corpus/$(basename "$f" .jsonl.gz)-$i.jsonl"; done; done
du -sh /tmp/corpus
