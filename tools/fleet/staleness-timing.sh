#!/usr/bin/env bash
# Iteration time of GRPO with rollouts from two `ppo-sharp serve` processes on loopback, synchronous (max_staleness=0)
# against overlapped (max_staleness=1: the next batch is generated on the servers while the trainer updates), same SFT
# model, data and seed. Runs 0, 1, 0, 1 (ITERATIONS each, the demo's GRPO settings otherwise) and prints the mean seconds
# per iteration and per phase, the first iteration of each run left out (it fills the queue; SUMMARY_ONLY=1 reprints).
# Usage (from the repository root, after a Release build and tools/fleet/exact-match.sh, whose SFT model and data it
# reuses): tools/fleet/staleness-timing.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
. tools/fleet/serve-fleet.sh
W=$(realpath -m "${1:-/tmp/ppo-sharp-fleet-exact}")
N=${ITERATIONS:-10}
[ -d "$W/local/sft" ] || { echo "$W/local/sft: not there; run tools/fleet/exact-match.sh $W first" >&2; exit 2; }
trap stop_serves EXIT
T="$W/timing"
if [ "${SUMMARY_ONLY:-0}" != 1 ]; then                     # SUMMARY_ONLY=1: print the figures of the runs already in WORK_DIR/timing
  rm -rf "$T"; mkdir -p "$T"
  start_serve "$W/local/sft" "$W" "$T/serve-a.log"; A=$SERVE_URL
  start_serve "$W/local/sft" "$W" "$T/serve-b.log"; B=$SERVE_URL
  for run in s0-a s1-a s0-b s1-b; do
    s=${run:1:1}
    $CLI grpo --init "$W/local/sft" --data "$W/local/data/prompts.jsonl" --reward edit-distance --seed 1 --out "$T/$run" \
      --set iterations=$N --set checkpoint_every=$N --set max_staleness=$s \
      --set rollout_engine=sglang --set "rollout_urls=[\"$A\",\"$B\"]" --set "weight_sync_dir=$T/sync-$run" > "$T/$run.log"
  done
  stop_serves
fi
echo "GRPO, demo settings, two serve processes; means over iterations 2.. of runs a and b (seconds)"
for s in 0 1; do
  rows="$T/s$s.jsonl"
  for run in a b; do jq -s -c '.[1:][]' "$T/s$s-$run/metrics.jsonl"; done > "$rows"
  printf 'max_staleness=%s: iteration %.2f | generate %.2f, forward+reward %.2f, train %.2f, sync %.2f, wait for the batches ahead %.2f | staleness %.2f, dropped %s (%s iterations)\n' "$s" \
    "$(metric_mean "$rows" iteration_seconds)" "$(metric_mean "$rows" generate_seconds)" \
    "$(jq -s '[.[] | .forward_seconds + .reward_seconds] | add / length' "$rows")" "$(metric_mean "$rows" train_seconds)" \
    "$(metric_mean "$rows" sync_seconds)" "$(metric_mean "$rows" prefetch_wait_seconds)" "$(metric_mean "$rows" staleness_mean)" \
    "$(jq -s '[.[].dropped_stale] | add' "$rows")" "$(wc -l < "$rows")"
done
