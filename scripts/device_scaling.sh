#!/usr/bin/env bash
# The 16-core figures of the speed issue, as run on the lent device machine (no network there): prep with
# tokenizers 1.x at 1..16 workers against N one-core ceilings on ~290 MB of the shared corpus, the
# coordinator's feed rate, and the fixed cost of a small run (whole command against the engine's wall time).
# Prepare here first (both folders are git-ignored through .git/info/exclude, carried by the device tool):
#   mkdir -p .bench && cp ../shared/corpus/*.jsonl.gz ../shared/tokenizers/gpt2.tokenizer.json .bench/
#   rm .bench/zh_poetry.jsonl.gz   # the carry limit is 64 MiB
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 -d .whl tokenizers==1.0.0rc3 isal
# then run `bash scripts/device_scaling.sh` there with carry [".bench", ".whl"].
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
python3 -c "import tokenizers, pyarrow, numpy, isal; print('tokenizers', tokenizers.__version__, 'pyarrow', pyarrow.__version__)"
mkdir -p /tmp/corpus
for i in 1 2; do for f in .bench/*.jsonl.gz; do zcat "$f" > "/tmp/corpus/$(basename "$f" .jsonl.gz)-$i.jsonl"; done; done
export PYTHONUNBUFFERED=1
echo "== fixed cost: prep run on sample_data (whole command, then the engine's wall time from the manifest)"
for i in 1 2 3; do
  start=$(date +%s.%N)
  python3 -m prep run --input sample_data/corpus --output /tmp/sample-out --tokenizer sample_data/tokenizer.json \
      --workers 2 --overwrite > /dev/null 2>&1 || echo "sample run failed"
  end=$(date +%s.%N)
  python3 -c "import json,sys; m=json.load(open('/tmp/sample-out/_manifest.json')); \
print(f'whole command {float(sys.argv[2])-float(sys.argv[1]):.2f} s, engine {m[\"timings\"][\"wall_s\"]:.2f} s')" "$start" "$end"
done
echo "== the coordinator's profile, 16 workers (cProfile: Python-heavy parts inflated)"
timeout 120 python3 -m cProfile -o /tmp/coord.prof -m prep run --input /tmp/corpus --output /tmp/prof-out \
    --tokenizer .bench/gpt2.tokenizer.json --workers 16 --overwrite > /dev/null 2>&1 || echo "profiled run failed"
python3 -c "import pstats; pstats.Stats('/tmp/coord.prof').sort_stats('tottime').print_stats(20)" 2>&1 | tail -28
timeout 420 python3 -m prep bench --corpus /tmp/corpus --mb 100000 --tokenizer .bench/gpt2.tokenizer.json --workers 16 \
  --repeats 1 --routers p2c --backends tokenizers --peers pool --scenarios main,feed --json-out "$OUT/bench.json" \
  --html-out "$OUT/bench.html" --timeout 300 2>&1 | tail -90
