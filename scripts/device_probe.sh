#!/usr/bin/env bash
# What holds prep back at 16 workers on the lent 16-core machine: variants of one prep run, alternating, each
# with the manifest's waits (the coordinator's and the writer's main thread's time waiting for a message: ~0
# means the run waits for that thread) and the workers' idle time. Prepared and carried like device_scaling.sh.
set -u
ROUNDS=${ROUNDS:-2}
source "$(dirname "$0")/device_setup.sh"
python3 -m prep run --input sample_data/corpus --output /tmp/warm --tokenizer sample_data/tokenizer.json --workers 2 \
    --overwrite > /dev/null 2>&1 || echo "warm-up run failed"
half=$((WORKERS * 3 / 4))
run() {  # name, environment, prep run arguments
  local name=$1 env=$2; shift 2
  local start end
  start=$(date +%s.%N)
  env $env timeout 120 python3 -m prep run --input /tmp/corpus --output /tmp/prep-probe-out --tokenizer "$TOK" \
      --overwrite --no-progress "$@" > /tmp/probe.log 2>&1 || { echo "$name FAILED"; tail -3 /tmp/probe.log; return; }
  end=$(date +%s.%N)
  python3 - "$name" "$start" "$end" <<'EOF'
import json, sys
name, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
m = json.load(open("/tmp/prep-probe-out/_manifest.json"))
t, w = m["timings"], m["routing"]["workers"]
mb = m["counts"]["bytes_in"] / 1e6
idle = sum(x["idle_s"] for x in w) / len(w)
busy = sum(x["busy_s"] for x in w) / len(w)
print(f"{name:28s} whole {end - start:5.2f} s ({mb / (end - start):6.1f} MB/s)  engine {t['wall_s']:5.2f} s "
      f"({mb / t['wall_s']:6.1f} MB/s)  coordinator cpu {t['coordinator_cpu_s']:.2f} waiting {t['coordinator_waiting_s']:.2f}"
      f"  writer cpu {t['writer_cpu_s']:.2f} main {t['writer_main_cpu_s']:.2f} waiting {t['writer_waiting_s']:.2f}"
      f"  worker busy {busy:.2f} idle {idle:.2f}  tokens {m['counts']['tokens']}")
EOF
}
for r in $(seq "$ROUNDS"); do
  run "w$WORKERS" "" --workers "$WORKERS"
  run "w$half" "" --workers "$half"
  run "w$WORKERS chunk 4 MiB" "" --workers "$WORKERS" --chunk-bytes 4MiB
  run "w$WORKERS features none" "" --workers "$WORKERS" --features none
done
