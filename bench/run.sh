#!/usr/bin/env bash
# Builds and runs every benchmark in bench/, each printing its figures and its ratio against a baseline measured in
# the same run (PyTorch for the KD step, plain/unfused/uncached/unpatched variants for the others).
# Usage: bench/run.sh [--quick] [--only kd,losses,memory,generation,checkpoint,activation,precision]
# Environment: PYTHON (default /usr/bin/python3, Debian's, with python3-torch and libopenblas0-pthread installed;
#   set PYTHON=none to skip the PyTorch reference), SHARPTUNE_SHARED_DATA (folder holding models/stories260K, for
#   the generation/evaluation bench), THREADS (intra-op threads, default: libtorch's choice).
# OMP_WAIT_POLICY=PASSIVE is exported for both SharpTune and PyTorch: on a shared or loaded machine OpenMP's default
# spin-waiting threads steal the cores they wait for (measured: up to 30x slower KD steps on 2 loaded cores).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
ONLY="kd,losses,memory,generation,checkpoint,activation,precision"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
export OMP_WAIT_POLICY=PASSIVE
PYTHON="${PYTHON:-/usr/bin/python3}"
THREADS="${THREADS:-0}"
want() { [[ ",$ONLY," == *",$1,"* ]]; }
exe() { # project folder -> built executable (built once, Release)
  local proj
  proj=$(ls "bench/$1"/*.csproj)
  dotnet build -c Release "$proj" -v q -nologo 1>&2
  local name
  name=$(basename "$proj" .csproj)
  ls -d "bench/$1"/bin/Release/*/linux-x64/"$name" 2>/dev/null | head -1
}
banner() { echo; echo "=== $* ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg))"; }

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; quick=$QUICK"

if want kd; then
  banner "KD step: SharpTune vs PyTorch"
  KD=$(exe KdStep)
  pyargs=(--python "$PYTHON"); [ "$PYTHON" = none ] && pyargs=(--no-python)
  if [ "$PYTHON" != none ] && ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "($PYTHON has no torch: apt-get install python3-torch libopenblas0-pthread; SharpTune side only)"; pyargs=(--no-python)
  fi
  if [ $QUICK = 1 ]; then "$KD" --quick --variant all --threads "$THREADS" "${pyargs[@]}"
  else "$KD" --rounds 3 --steps 3 --variant all --threads "$THREADS" "${pyargs[@]}"; fi
fi

if want losses; then
  banner "Loss memory/time at Llama 3.1 8B -> 3.2 1B shapes (baseline: plain whole-logit loss)"
  LOSSES=$(exe Losses)
  if [ $QUICK = 1 ]; then "$LOSSES" --tokens 256; else "$LOSSES" --tokens 4096; fi # 4,096: the loss issue's size
fi

if want memory; then
  banner "RSS over training steps (baseline: glibc malloc as is)"
  MEM=$(exe Memory)
  steps=1000; [ $QUICK = 1 ] && steps=300
  for mode in off both; do "$MEM" $steps $mode 1; done
fi

if want generation; then
  banner "Generation (KV cache vs recompute) and evaluation docs/s (packed vs one row per choice)"
  DATA="${SHARPTUNE_SHARED_DATA:-}"
  if [ -z "$DATA" ] || [ ! -f "$DATA/models/stories260K/stories260K.bin" ]; then
    echo "(skipped: set SHARPTUNE_SHARED_DATA to the folder holding models/stories260K)"
  else
    GEN=$(exe Generation)
    if [ $QUICK = 1 ]; then "$GEN" "$DATA/models/stories260K" --tokens 64 --docs 8 --repeats 2
    else "$GEN" "$DATA/models/stories260K"; fi
  fi
fi

if want checkpoint; then
  banner "Checkpoint I/O, Llama 3.2 1B shape, random weights (file size vs peak RSS)"
  CK=$(exe Checkpointing)
  if [ $QUICK = 1 ]; then "$CK" --layers 2; else "$CK"; fi
fi

if want activation; then
  banner "Activation checkpointing peak RSS (baseline: plain)"
  AC=$(exe ActivationCheckpointing)
  layers=8; [ $QUICK = 1 ] && layers=4
  for mode in plain ckpt; do "$AC" $mode $layers; done
fi

if want precision; then
  banner "fp32 vs bf16 matmul"
  PR=$(exe Precision)
  if [ $QUICK = 1 ]; then "$PR" 256 1; else "$PR" 512 1; fi
fi
