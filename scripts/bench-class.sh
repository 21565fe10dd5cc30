#!/usr/bin/env bash
# The whole speed measurement of issue #17 on this machine, in the order that
# decides it, each result written to benchmarks/results/<step>-<class>-<date>.json:
#   1. pass budgets of the fast and the fp32 path  (batch_budget.py)
#   2. what the adaptive fp32 re-score costs       (rescore_cost.py)
#   3. one OpenVINO stream or two                   (openvino_streams.py)
#   4. where the OpenVINO passes spend their time   (ov_profile.py)
#   5. the harness against both peers, with soak    (run.py --soak)
# Run it on a quiet machine: anything else on the 2 cores moves the figures.
#   ./scripts/bench-class.sh [STEP ...]     # steps by name; default: all five
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
class=$("$PY" -c 'import sys; sys.path.insert(0, "benchmarks"); import machine
from rerank_plugins.device import read_cpu_flags
print(machine.hardware_class(read_cpu_flags()))')
stamp=$(date -u +%Y-%m-%d)
out=benchmarks/results
steps=("$@")
known=(batch_budget rescore_cost openvino_streams ov_profile run)
[ ${#steps[@]} -gt 0 ] || steps=("${known[@]}")
echo "hardware class $class; load $(cut -d' ' -f1-3 /proc/loadavg); steps: ${steps[*]}"
for step in "${steps[@]}"; do  # every name checked before the first step's minutes
  [[ " ${known[*]} " == *" $step "* ]] || { echo "unknown step $step (${known[*]})" >&2; exit 2; }
done
for step in "${steps[@]}"; do
  case $step in
    batch_budget|rescore_cost|openvino_streams|ov_profile)
      file="$out/${step//_/-}-$class-$stamp.json"
      "$PY" "benchmarks/$step.py" --out "$file" ;;
    run)
      file="$out/issue17-$class-full-$stamp.json"
      "$PY" benchmarks/run.py --soak --out "$file" ;;
  esac
  echo "== $step -> $file"
done
