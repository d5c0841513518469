#!/usr/bin/env bash
# The 16-core figures of the speed issue, as run on the lent device machine (no network there): prep with
# tokenizers 1.x at 1, 2, 4, 8 and 16 workers against N one-core pipelines on ~590 MB of the shared corpus (four copies),
# other trees of prep (.bench/*/prep) against this one at 16 workers (whole command, alternating), the feed rate, and
# the fixed cost of a small run.
# Prepare here first (all three folders are git-ignored through .git/info/exclude, carried by the device tool):
#   mkdir -p .bench && cp ../shared/corpus/*.jsonl.gz ../shared/tokenizers/gpt2.tokenizer.json .bench/
#   rm .bench/zh_poetry.jsonl.gz   # the carry limit is 64 MiB
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 -d .whl tokenizers==1.0.0rc3 isal
#   rm -rf .bench/base && mkdir -p .bench/base && git archive BASE prep | tar -x -C .bench/base   # any name, any tree
# then run `bash scripts/device_scaling.sh` there with carry [".bench", ".whl"]. To try it here first, on a little:
#   PATH=<a folder whose python3 is .venv-fast's>:$PATH NO_WHEELS=1 WORKERS=2 COPIES=1 \
#   INPUTS=".bench/en_fortunes.jsonl.gz" OUT=/tmp/device-out bash scripts/device_scaling.sh
set -u
source "$(dirname "$0")/device_setup.sh"

echo "== fixed cost: prep run on sample_data (whole command, then the engine's wall time from the manifest)"
for i in 1 2 3; do  # the first compiles and caches the kernels
  start=$(date +%s.%N)
  python3 -m prep run --input sample_data/corpus --output /tmp/sample-out --tokenizer sample_data/tokenizer.json \
      --workers 2 --overwrite > /dev/null 2>&1 || echo "sample run failed"
  end=$(date +%s.%N)
  python3 -c "import json,sys; m=json.load(open('/tmp/sample-out/_manifest.json')); \
print(f'whole command {float(sys.argv[2])-float(sys.argv[1]):.2f} s, engine {m[\"timings\"][\"wall_s\"]:.2f} s')" "$start" "$end"
done

# Other trees of prep to compare with this one at $WORKERS workers, each in .bench/<name>/prep (see above).
TREES=${TREES:-$(cd .bench && for d in */; do [ -d "$d/prep" ] && printf '%s ' "${d%/}"; done)}
if [ -n "$TREES" ]; then
  echo "== other trees ($TREES) against this one: prep run --workers $WORKERS, whole command, alternating"
  for tree in $TREES; do  # each compiles and caches its kernels once
    PYTHONPATH=$SITE:$PWD/.bench/$tree python3 -m prep run --input sample_data/corpus --output /tmp/warm-$tree \
        --tokenizer sample_data/tokenizer.json --workers 2 --overwrite > /dev/null 2>&1
  done
  TIMEFORMAT='%R s wall'
  for i in 1 2; do
    for side in $TREES new; do
      path=$SITE:$PWD; [ $side = new ] || path=$SITE:$PWD/.bench/$side
      rm -rf /tmp/ab-$side; echo -n "$side: "
      { time PYTHONPATH=$path timeout 120 python3 -m prep run --input /tmp/corpus --output /tmp/ab-$side \
          --tokenizer $TOK --workers $WORKERS --overwrite --no-progress > /tmp/ab-$side.log 2>&1 ; } 2>&1
      python3 -c "import json; m=json.load(open('/tmp/ab-$side/_manifest.json')); t=m['timings']; \
w=m['routing']['workers']; print('   engine', t['wall_s'], 's, coordinator CPU', t.get('coordinator_cpu_s'), \
'waiting', t.get('coordinator_waiting_s'), 's, writer CPU', t.get('writer_cpu_s'), 'main', t.get('writer_main_cpu_s'), \
'waiting', t.get('writer_waiting_s'), 's, worker idle', round(sum(x['idle_s'] for x in w) / len(w), 2), 's, tokens', \
m['counts']['tokens'])" || tail -3 /tmp/ab-$side.log
    done
  done
  for side in $TREES; do
    (cd /tmp/ab-$side && sha256sum part-*) > /tmp/sums-$side; (cd /tmp/ab-new && sha256sum part-*) > /tmp/sums-new
    cmp -s /tmp/sums-$side /tmp/sums-new && echo "shards byte-identical to $side's" || echo "SHARDS DIFFER from $side's"
  done
fi

echo "== prep bench: 1, 2, 4, ... $WORKERS workers against $WORKERS pipelines (whole output: bench.txt)"
timeout ${BENCH_TIMEOUT:-400} python3 -m prep bench --corpus /tmp/corpus --mb 100000 --tokenizer $TOK --workers $WORKERS \
  --repeats 1 --routers p2c --backends tokenizers --peers pool-batch --scenarios main,feed --json-out "$OUT/bench.json" \
  --html-out "$OUT/bench.html" --timeout 120 > "$OUT/bench.txt" 2>&1
sed -n '/^== feed/,/^== peak RSS/p' "$OUT/bench.txt" | cut -c1-330
sed -n '/^== issue 12/,$p' "$OUT/bench.txt"
