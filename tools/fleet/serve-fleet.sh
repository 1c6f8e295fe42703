# Sourced by the fleet scripts: start_serve MODEL WEIGHTS_DIR LOG starts `ppo-sharp serve` on 127.0.0.1 (a free port)
# and sets SERVE_URL and SERVE_PID; stop_serves ends the serves this shell started (by their process ids).
CLI=${CLI:-dotnet src/PpoSharp.Cli/bin/Release/net10.0/linux-x64/ppo-sharp.dll}
SERVE_PIDS=()
export PPOSHARP_ROLLOUT_API_KEY=${PPOSHARP_ROLLOUT_API_KEY:-fleet-$$-$RANDOM}   # serve's weight endpoints need a key; the trainer sends it

start_serve() {
  local model=$1 weights=$2 log=$3
  $CLI serve --model "$model" --port 0 --api-key "$PPOSHARP_ROLLOUT_API_KEY" --weights-dir "$weights" >"$log" 2>&1 &
  SERVE_PID=$!
  SERVE_PIDS+=("$SERVE_PID")
  for _ in $(seq 1 600); do                                 # at most 5 minutes on a loaded machine
    SERVE_URL=$(grep -o 'on http://127\.0\.0\.1:[0-9]*' "$log" | head -1 | cut -c4- || true)
    [ -n "$SERVE_URL" ] && return 0
    kill -0 "$SERVE_PID" 2>/dev/null || { echo "serve did not start: $(cat "$log")" >&2; return 1; }
    sleep 0.5
  done
  echo "serve did not start within 5 minutes" >&2; return 1
}

stop_serves() {
  for pid in "${SERVE_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${SERVE_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  SERVE_PIDS=()
}

# metric_mean FILE KEY [SKIP]: the mean of KEY over the rows of a metrics.jsonl, the first SKIP rows left out
metric_mean() {
  jq -s --arg k "$2" --argjson skip "${3:-0}" '[.[$skip:][] | .[$k] | select(. != null)] | if length == 0 then null else add / length end' "$1"
}
