#!/usr/bin/env bash
# The 16-core scaling table of the speed issue, as run on the lent device machine (no network there):
# prep with tokenizers 1.x at 1..16 workers against N one-core ceilings, on ~290 MB of the shared corpus.
# Prepare here first (both folders are git-ignored through .git/info/exclude, carried by the device tool):
#   mkdir -p .bench && cp ../shared/corpus/*.jsonl.gz ../shared/tokenizers/gpt2.tokenizer.json .bench/
#   rm .bench/zh_poetry.jsonl.gz   # the carry limit is 64 MiB
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 -d .whl tokenizers==1.0.0rc3
# then run `bash scripts/device_scaling.sh` there with carry [".bench", ".whl"].
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
python3 -c "import tokenizers, pyarrow, numpy; print('tokenizers', tokenizers.__version__, 'pyarrow', pyarrow.__version__)"
mkdir -p /tmp/corpus
for i in 1 2; do for f in .bench/*.jsonl.gz; do zcat "$f" > "/tmp/corpus/$(basename "$f" .jsonl.gz)-$i.jsonl"; done; done
export PYTHONUNBUFFERED=1
timeout 480 python3 -m prep bench --corpus /tmp/corpus --mb 100000 --tokenizer .bench/gpt2.tokenizer.json --workers 16 \
  --repeats 1 --routers p2c --backends tokenizers --peers pool --scenarios main --json-out "$OUT/bench.json" \
  --html-out "$OUT/bench.html" --timeout 300 2>&1 | tail -80
