#!/usr/bin/env bash
# Held-out exact match of the demo's PPO and GRPO with rollouts from a fleet of two `ppo-sharp serve` processes on
# loopback (rollout_engine=sglang, weight_sync=disk) against the demo's own local runs, same seed and settings:
#   1. `demo --methods ppo,grpo` (data, SFT, then PPO and GRPO with local rollouts), unless KEEP_LOCAL=1 and it is there;
#   2. side by side, `ppo` and `grpo` from the same SFT model with the demo's settings (the built-in defaults, seed 1,
#      GRPO 30 iterations) and the fleet keys, each against two `serve --model WORK/local/sft` processes of its own;
#   4. `eval` (greedy, 16 new tokens, the demo's) of the four models on the 200 held-out prompts.
# Usage (from the repository root, after a Release build): tools/fleet/exact-match.sh [WORK_DIR]
# Takes many minutes. Prints a summary; the runs stay in WORK_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tools/fleet/serve-fleet.sh
W=$(realpath -m "${1:-/tmp/ppo-sharp-fleet-exact}")
trap stop_serves EXIT

if [ "${KEEP_LOCAL:-0}" != 1 ] || [ ! -f "$W/local/summary.json" ]; then   # KEEP_LOCAL=1: reuse WORK_DIR/local
  rm -rf "$W"; mkdir -p "$W"
  start=$(date +%s)
  $CLI demo --out "$W/local" --methods ppo,grpo | tee "$W/local.log"
  echo "local demo (SFT, PPO, GRPO, evaluations): $(( $(date +%s) - start )) s" | tee "$W/local-time.txt"
fi
mkdir -p "$W/fleet"
data="$W/local/data"

# fleet_run ppo|grpo: two serve processes of its own, then the run with the demo's settings and the fleet keys
fleet_run() {
  local m=$1 extra=()
  trap stop_serves EXIT
  [ "$m" = grpo ] && extra=(--set iterations=30)                                   # the demo's GRPO section
  rm -rf "$W/fleet/$m" "$W/sync-$m"
  start_serve "$W/local/sft" "$W" "$W/fleet/$m-serve-a.log"; local a=$SERVE_URL
  start_serve "$W/local/sft" "$W" "$W/fleet/$m-serve-b.log"; local b=$SERVE_URL
  local start=$(date +%s)
  $CLI $m --init "$W/local/sft" --data "$data/prompts.jsonl" --reward edit-distance --seed 1 --out "$W/fleet/$m" "${extra[@]}" \
    --set rollout_engine=sglang --set "rollout_urls=[\"$a\",\"$b\"]" --set weight_sync=disk --set "weight_sync_dir=$W/sync-$m" > "$W/fleet/$m.log"
  echo "$(( $(date +%s) - start ))" > "$W/fleet/$m-seconds.txt"
}
if [ "${SUMMARY_ONLY:-0}" != 1 ]; then                     # SUMMARY_ONLY=1: print the figures of the runs already in WORK_DIR
  pids=()
  for m in ${FLEET_METHODS:-ppo grpo}; do (fleet_run "$m") & pids+=($!); done          # PPO and GRPO side by side
  for pid in "${pids[@]}"; do wait "$pid"; done
fi

echo
echo "== fleets of two serve processes against local rollouts, demo settings, seed 1"
for m in ppo grpo; do
  for side in local fleet; do
    r=$($CLI eval --model "$W/$side/$m" --data "$data/eval.jsonl" --reward edit-distance --max-new-tokens 16)
    echo "$m $side: held-out $r"
  done
  f="$W/fleet/$m/metrics.jsonl"
  echo "$m fleet: training $(cat "$W/fleet/$m-seconds.txt") s; mean iteration $(metric_mean "$f" iteration_seconds) s" \
    "(generate $(metric_mean "$f" generate_seconds), sync $(metric_mean "$f" sync_seconds), train $(metric_mean "$f" train_seconds))"
  echo "$m fleet: rollout_logprob_diff_mean per iteration $(jq -s -c '[.[].rollout_logprob_diff_mean]' "$f"), max $(jq -s '[.[].rollout_logprob_diff_mean] | max' "$f")"
done
grep -E "^(ppo|grpo): [0-9]+ iterations" "$W/local.log" | sed 's/^/local demo: /' || true
cat "$W/local-time.txt" 2>/dev/null || true
