#!/usr/bin/env bash
# The default-scale queue (docs/default_scale.md, "The queue") as two background lanes of one-thread jobs: on a
# 2-core CPU two one-thread jobs train more tokens per second than anything else (README, "Experiments"). A lane
# runs its sweeps one after another. Finished cells are found and skipped, and a killed cell resumes from its last
# epoch, so the same command continues the queue in the next session.
#
#   scripts/lanes.sh [--after PID] [--dry-run | --status] [a] [b]     (no lane named: both)
#
#   --after PID  start once process PID has ended (a sweep already running in that lane's place)
#   --dry-run    print each lane's commands and exit
#   --status     print each lane's sweep, cell and progress (from its log) and exit
#
# The lanes run this checkout's code. To keep editing while they run, start them from a second worktree and write
# the records here:  git worktree add ../run-lanes HEAD && cd ../run-lanes &&
#                    PEFT_REPRO_RESULTS=$OLDPWD/results PEFT_REPRO_DATA_ROOT=... scripts/lanes.sh
# Logs: logs/lane_<a|b>.log beside results/ (git-ignored). Stop a lane: kill its process group (printed at start).
#
# threads=1 is what makes a lane one-thread: under the joblib launcher with n_jobs=1 a run takes every core
# (peft_repro/__main__.py), and two such lanes put four spinning OpenMP threads on two cores. Measured: a WikiSQL
# LoRA step took 28-35 s with both lanes at two threads, 6 s with the other lane paused.
set -euo pipefail

# Every compared cell gets 5 runs (docs/default_scale.md, session 14: with the claims' t intervals, 3 seeds leave 2
# degrees of freedom, t = 4.30; 5 seeds halve the runs' CI half-width). Seeds 0-2 of a sweep run before its seeds 3, 4.
#
# Lane A: LoRA Tables 5/6 on WikiSQL (the equal-budget pair Wq,Wv r=4 against Wq r=8, r=4, 8, then Wq,Wv at r=1, 64),
# e2e_main's main rows tested on all 630 MRs at their rates chosen on dev, xsum_main's seeds 0-2
# (prefix_below_ft_xsum), the prefix half of low-data XSum at 50 (the FT half runs in lane B: together they give
# prefix_beats_ft_low_data_xsum its first measurement), xsum_main's seeds 3, 4, the low-data XSum budget check at 50
# (low_data_xsum_budget: prefix-tuning at 6 epochs, whose dev ROUGE-2 still rose at 3 in 8 of 10 runs: before the
# prefix half at 100 is run at 3 epochs), low-data E2E at 100, the prefix half of low-data XSum at 100, the XSum
# budget check (xsum_main_budget: xsum_main's prefix-tuning at 4 epochs, whose dev ROUGE-2 still rose at 2), and last
# LoRA Table 5's other five weight-type sets on WikiSQL, 3 seeds each (its Wq r=8 and Wq,Wv r=4 are Table 6's runs,
# found done; conf/scale_preset/lora_weight_type/default.yaml).
ALL_MRS="task.max_eval_examples=null lr_search=null"
LANE_A=(
  "+experiment=lora_rank_sweep 'method.targets=choice([q],[q,v])' method.r=4,8 seed=0,1,2"
  "+experiment=lora_rank_sweep 'method.targets=[q,v]' method.r=1,64 seed=0,1,2"
  "+experiment=e2e_main method=prefix_mlp trainer.lr=1e-3 seed=0,1,2 $ALL_MRS"
  "+experiment=e2e_main method=full trainer.lr=2e-4 seed=0,1,2 $ALL_MRS"
  "+experiment=e2e_main method=lora trainer.lr=5e-3 seed=0,1,2 $ALL_MRS"
  "+experiment=xsum_main seed=0,1,2"
  "+experiment=low_data_xsum method=prefix_mlp task.low_data.size=50"
  "+experiment=xsum_main seed=3,4"
  "+experiment=low_data_xsum_budget"
  "+experiment=low_data_e2e method=prefix_mlp,full task.low_data.size=100"
  "+experiment=low_data_xsum method=prefix_mlp task.low_data.size=100"
  "+experiment=xsum_main_budget"
  "+experiment=lora_weight_type"
)
# Lane B: the prefix-tuning claims. Low-data E2E at 50, prefix_init (every word at seed 0, the two relevant words at
# seeds 1, 2, the random-init controls, each its own draw since session 13), the FT half of low-data XSum at 50,
# seeds 3 and 4 of every compared cell of the E2E setting (e2e_main's rows on 630 MRs and EMB-10, INFIX-10,
# PREFIX-10 and LoRA r=4 on its 200), the budget check's seeds 0-2 (e2e_main_budget: e2e_main's FT, prefix and LoRA
# at 150 steps on all 630 MRs: do the head-to-heads' verdicts depend on the setting's 75 steps?), seeds 3, 4 of
# PREFIX-1 and -40 and LoRA r=64, the budget check's seeds 3, 4 (session 18: at 3 seeds its order, LoRA > FT >
# prefix, is not the 75-step one), seeds 3, 4 of Table 5's equal-budget pair on WikiSQL (Wq,Wv r=4 and Wq r=8: four
# runs bring qv_beats_q_equal_budget to its plan; session 19), the other WikiSQL ranks at seeds 0-2 (session 20:
# qv_beats_q holds at r = 4, 8 and has no results at r = 1, 2, 64, so these 12 runs can decide it, while
# emb_vs_infix's k = 1, 20 can only add a failure to prefix_gt_infix_gt_emb, whose INFIX-10 vs EMB-10 is undecided at
# its plan), emb_vs_infix's k=1, 20, low-data XSum's FT at 100, prefix-tuning's rate at 50 articles again (its grid
# now starts at 5e-5, the rate chosen at 100; session 25: a new grid point, and its 10 runs again only if the choice
# moves; lane A's sweep 7 is the same command, whose finished cells it finds), seeds 3, 4 of every other WikiSQL
# cell, and last Table 5's weight types in the reverse of lane A's order (session 26: lane B's queue ends some 10 hours
# before lane A's; a cell or lr-grid point one lane is running, the other waits for and finds, so the two lanes split
# the table and meet in its middle).
LANE_B=(
  "+experiment=low_data_e2e method=prefix_mlp,full task.low_data.size=50"
  "+experiment=prefix_init method.init=auto"
  "+experiment=prefix_init method.init=auto 'method.init_text=table-to-text:,summarize' seed=1,2"
  "+experiment=prefix_init method.init=random"
  "+experiment=low_data_xsum method=full task.low_data.size=50"
  "+experiment=e2e_main method=prefix_mlp trainer.lr=1e-3 seed=3,4 $ALL_MRS"
  "+experiment=e2e_main method=full trainer.lr=2e-4 seed=3,4 $ALL_MRS"
  "+experiment=e2e_main method=lora trainer.lr=5e-3 seed=3,4 $ALL_MRS"
  "+experiment=e2e_main method=prefix_mlp,embedding_only,infix,lora seed=3,4"
  "+experiment=e2e_main_budget seed=0,1,2"
  "+experiment=prefix_length_sweep method.num_virtual_tokens=1,40 seed=3,4"
  "+experiment=lora_rank_sweep_e2e method.r=64 seed=3,4"
  "+experiment=e2e_main_budget seed=3,4"
  "+experiment=lora_rank_sweep 'method.targets=[q,v]' method.r=4 seed=3,4"
  "+experiment=lora_rank_sweep 'method.targets=[q]' method.r=8 seed=3,4"
  "+experiment=lora_rank_sweep 'method.targets=[q]' method.r=1,2,64 seed=0,1,2"
  "+experiment=lora_rank_sweep 'method.targets=[q,v]' method.r=2 seed=0,1,2"
  "+experiment=emb_vs_infix method.num_virtual_tokens=1,20 seed=0,1,2"
  "+experiment=emb_vs_infix method.num_virtual_tokens=1,20 seed=3,4"
  "+experiment=low_data_xsum method=full task.low_data.size=100"
  "+experiment=low_data_xsum method=prefix_mlp task.low_data.size=50"
  "+experiment=lora_rank_sweep 'method.targets=choice([q],[q,v])' method.r=1,2,4,8,64 seed=3,4"
  "+experiment=lora_weight_type 'method.targets=choice([q,k,v,o],[q,k],[o],[v],[k])'"
)

# appended to every command: one job at a time, one torch thread, no W&B (LANE_RUN_ARGS replaces it: on a lent GPU,
# scripts/gpu/lecture.sh queue runs both lanes at once with several jobs each)
RUN_ARGS=${LANE_RUN_ARGS:-"hydra/launcher=local_parallel hydra.launcher.n_jobs=1 threads=1 logger=none"}
# appended to the E2E experiments' commands only (a GPU machine has no Java: BLEU and NIST there, every output kept)
E2E_ARGS=${LANE_E2E_ARGS:-}
E2E_EXPERIMENTS='^\+experiment=(e2e_main|e2e_main_budget|emb_vs_infix|prefix_length_sweep|lora_rank_sweep_e2e|low_data_e2e|prefix_init|prompt_vs_emb_vs_prefix)( |$)'

after="" dry=0 status=0 lanes=()
while (($#)); do
  case $1 in
    --after) after=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --status) status=1; shift ;;
    a|b) lanes+=("$1"); shift ;;
    *) echo "error: unknown argument $1 (usage: scripts/lanes.sh [--after PID] [--dry-run | --status] [a] [b])" >&2; exit 2 ;;
  esac
done
((${#lanes[@]})) || lanes=(a b)

repo=$(cd "$(dirname "$0")/.." && pwd)
results=${PEFT_REPRO_RESULTS:-$repo/results}
logs=$(dirname "$results")/logs
python=${PYTHON:-python}

run_lane() {  # name, commands...
  local name=$1; shift
  if [[ -n $after ]]; then while kill -0 "$after" 2>/dev/null; do sleep 20; done; fi
  for spec in "$@"; do
    echo "=== $(date '+%F %T') start: $spec" >> "$logs/lane_$name.log"
    local rc=0 extra=""
    [[ $spec =~ $E2E_EXPERIMENTS ]] && extra=$E2E_ARGS
    eval "$python -m peft_repro $spec $RUN_ARGS $extra" \
      >> "$logs/lane_$name.log" 2>&1 || rc=$?
    echo "=== $(date '+%F %T') exit $rc: $spec" >> "$logs/lane_$name.log"
  done
}

lane_list() {  # name: the lane's sweeps, into `commands`
  if [[ $1 == a ]]; then commands=("${LANE_A[@]}"); else commands=("${LANE_B[@]}"); fi
}

show_status() {  # name: the lane's last sweep line, its current cell and progress bar, and how fresh the log is
  local log="$logs/lane_$1.log"
  [[ -f $log ]] || { echo "lane $1: no log at $log"; return; }
  echo "lane $1 (log written $(( $(date +%s) - $(stat -c %Y "$log") )) s ago):"
  grep -a '^=== ' "$log" | tail -n 1 | sed 's/^=== /  /'
  local started i commands; started=$(grep -a '^=== .* start: ' "$log" | tail -n 1 | sed 's/^=== .* start: //')
  lane_list "$1"
  for i in "${!commands[@]}"; do  # where a GPU window's queue can start this lane (LANE_A_FROM, LANE_B_FROM)
    [[ ${commands[$i]} == "$started" ]] && echo "  sweep $((i + 1)) of ${#commands[@]}"
  done
  grep -a 'trainable parameters' "$log" | tail -n 1 | sed 's/.*\] - /  cell: /' | cut -c1-200
  tail -c 4000 "$log" | tr '\r' '\n' | grep -a '%|' | tail -n 1 | sed -E 's/^ */  /; s/(\[[^]]*\]).*/\1/'
}
if ((status)); then
  for name in "${lanes[@]}"; do show_status "$name"; done
  exit 0
fi

for name in "${lanes[@]}"; do  # LANE_A_FROM / LANE_B_FROM: a sweep number of that lane's list, checked before any start
  from_var=LANE_${name^^}_FROM; from=${!from_var:-1}; lane_list "$name"
  if ! [[ $from =~ ^[1-9][0-9]*$ ]] || ((from > ${#commands[@]})); then
    echo "error: $from_var=$from: give a sweep number from 1 to ${#commands[@]} (--status says where it is)" >&2
    exit 2
  fi
done

if ((!dry)); then
  mkdir -p "$logs"
  cd "$repo"
  export PEFT_REPRO_RESULTS=$results OMP_NUM_THREADS=1 WANDB_MODE=${WANDB_MODE:-disabled}
fi
for name in "${lanes[@]}"; do
  lane_list "$name"
  # LANE_A_FROM / LANE_B_FROM=N: start the lane at its Nth sweep, the ones before known done (finding that a sweep is
  # done costs a process start: 12-23 s each on the GPU machine, minutes of a 15-minute window)
  from_var=LANE_${name^^}_FROM; commands=("${commands[@]:${!from_var:-1}-1}")
  if ((dry)); then
    printf "lane %s:\n" "$name"
    for spec in "${commands[@]}"; do
      extra=""; [[ $spec =~ $E2E_EXPERIMENTS ]] && extra=" $E2E_ARGS"
      printf "  python -m peft_repro %s %s%s\n" "$spec" "$RUN_ARGS" "$extra"
    done
    continue
  fi
  setsid bash -c "$(declare -f run_lane); after='$after' logs='$logs' python='$python' RUN_ARGS='$RUN_ARGS' \
E2E_ARGS=\"\$1\" E2E_EXPERIMENTS=\"\$2\"; shift 2; run_lane $name \"\$@\"" \
    lane "$E2E_ARGS" "$E2E_EXPERIMENTS" "${commands[@]}" < /dev/null > /dev/null 2>&1 &
  echo "lane $name: process group $! (stop: kill -- -$!), log $logs/lane_$name.log"
done
