#!/usr/bin/env bash
# The 16-core figures of the speed issue, as run on the lent device machine (no network there): prep with
# tokenizers 1.x at 1, 2, 4, 8 and 16 workers against N one-core pipelines on ~590 MB of the shared corpus (four copies),
# a base commit against this one at 16 workers (whole command, alternating), the coordinator's feed rate, and
# the fixed cost of a small run.
# Prepare here first (all three folders are git-ignored through .git/info/exclude, carried by the device tool):
#   mkdir -p .bench && cp ../shared/corpus/*.jsonl.gz ../shared/tokenizers/gpt2.tokenizer.json .bench/
#   rm .bench/zh_poetry.jsonl.gz   # the carry limit is 64 MiB
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 -d .whl tokenizers==1.0.0rc3 isal
#   rm -rf .bench/base && mkdir -p .bench/base && git archive BASE prep | tar -x -C .bench/base
# then run `bash scripts/device_scaling.sh` there with carry [".bench", ".whl"]. To try it here first, on a little:
#   PATH=<a folder whose python3 is .venv-fast's>:$PATH NO_WHEELS=1 WORKERS=2 COPIES=1 \
#   INPUTS=".bench/en_fortunes.jsonl.gz" OUT=/tmp/device-out bash scripts/device_scaling.sh
set -u
WORKERS=${WORKERS:-16} COPIES=${COPIES:-4} INPUTS=${INPUTS:-.bench/*.jsonl.gz}
[ -n "${NO_WHEELS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
SITE=/tmp/site
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1
python3 -c "import tokenizers, pyarrow, numpy, numba, isal; print('tokenizers', tokenizers.__version__, 'pyarrow', \
pyarrow.__version__, 'numpy', numpy.__version__, 'numba', numba.__version__)"
nproc
rm -rf /tmp/corpus && mkdir -p /tmp/corpus
for i in $(seq "$COPIES"); do for f in $INPUTS; do zcat "$f" > "/tmp/corpus/$(basename "$f" .jsonl.gz)-$i.jsonl"; done; done
du -sh /tmp/corpus
TOK=.bench/gpt2.tokenizer.json

echo "== fixed cost: prep run on sample_data (whole command, then the engine's wall time from the manifest)"
for i in 1 2 3; do  # the first compiles and caches the kernels
  start=$(date +%s.%N)
  python3 -m prep run --input sample_data/corpus --output /tmp/sample-out --tokenizer sample_data/tokenizer.json \
      --workers 2 --overwrite > /dev/null 2>&1 || echo "sample run failed"
  end=$(date +%s.%N)
  python3 -c "import json,sys; m=json.load(open('/tmp/sample-out/_manifest.json')); \
print(f'whole command {float(sys.argv[2])-float(sys.argv[1]):.2f} s, engine {m[\"timings\"][\"wall_s\"]:.2f} s')" "$start" "$end"
done

if [ -d .bench/base/prep ]; then
  echo "== base (.bench/base) against this tree: prep run --workers $WORKERS, whole command, alternating"
  PYTHONPATH=$SITE:$PWD/.bench/base python3 -m prep run --input sample_data/corpus --output /tmp/warm-base \
      --tokenizer sample_data/tokenizer.json --workers 2 --overwrite > /dev/null 2>&1  # its kernels compiled
  TIMEFORMAT='%R s wall, %U s user, %S s sys'
  for i in 1 2; do
    for side in base new; do
      path=$SITE:$PWD; [ $side = base ] && path=$SITE:$PWD/.bench/base
      rm -rf /tmp/ab-$side; echo -n "$side: "
      { time PYTHONPATH=$path timeout 120 python3 -m prep run --input /tmp/corpus --output /tmp/ab-$side \
          --tokenizer $TOK --workers $WORKERS --overwrite > /tmp/ab-$side.log 2>&1 ; } 2>&1
      python3 -c "import json; m=json.load(open('/tmp/ab-$side/_manifest.json')); t=m['timings']; \
print('   engine', t['wall_s'], 's, coordinator CPU', t.get('coordinator_cpu_s'), 's, writer CPU', \
t.get('writer_cpu_s'), 's, tokens', m['counts']['tokens'])" || tail -3 /tmp/ab-$side.log
    done
  done
  (cd /tmp/ab-base && sha256sum part-*) > /tmp/sums-base; (cd /tmp/ab-new && sha256sum part-*) > /tmp/sums-new
  cmp -s /tmp/sums-base /tmp/sums-new && echo "shards byte-identical to base" || { echo "SHARDS DIFFER"; \
      paste /tmp/sums-base /tmp/sums-new; }
fi

echo "== prep bench: 1, 2, 4, ... $WORKERS workers against $WORKERS pipelines"
timeout 330 python3 -m prep bench --corpus /tmp/corpus --mb 100000 --tokenizer $TOK --workers $WORKERS \
  --repeats 1 --routers p2c --backends tokenizers --peers pool --scenarios main,feed --json-out "$OUT/bench.json" \
  --html-out "$OUT/bench.html" --timeout 120 2>&1 | tail -70
