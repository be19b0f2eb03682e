#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (how the H200 figures in README.md were made):
# the CUDA-only tests, benchmarks/prior_speed.py on the GPU in bf16/fp16/fp32, the dehaze and deblur
# commands on cuda against cpu, and short CUDA training runs of both trainers (with a resume).
#   bash benchmarks/gpu_checks.sh [OUT_DIR]        # from the repository root; OUT_DIR default /tmp/gpu_checks
# Needs the package's dependencies importable (python3 -m pip install -e . or PYTHONPATH=.).
set -o pipefail
out=${1:-/tmp/gpu_checks}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
cli() { timeout "$1" python3 -c "import sys; from pipelines.cli import main; sys.argv[0] = 'robustsam-restore'; main()" "${@:2}"; }
step() { echo; echo "=== $1 ($(date +%T))"; }
step environment
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" || exit 1
step "CUDA tests"
timeout 300 python3 -m pytest -q -m gpu -rA tests > "$out/gpu_tests.txt" 2>&1
grep -E "^(PASSED|FAILED|ERROR|SKIPPED)|passed|failed" "$out/gpu_tests.txt"
step "prior speed, bf16 encoder + automatic masks + dehaze images/s"
timeout 300 python3 benchmarks/prior_speed.py --device cuda --dtype bf16 --repeats 5 --amg --e2e --e2e-images 8 \
  --json "$out/prior_speed_bf16.json" 2>&1 | tail -16
for d in fp16 fp32; do
  step "prior speed, $d encoder"
  timeout 120 python3 benchmarks/prior_speed.py --device cuda --dtype $d --repeats 5 --json "$out/prior_speed_$d.json" 2>&1 | tail -9
done
# deblur: the packaged deblurrers' local channel statistics (box_mean: cumsum runs in float32 under autocast)
for pair in "dehaze hazy" "deblur blurry"; do
  set -- $pair
  step "$1 examples on cuda (half) against cpu"
  cli 120 "$1" "examples/$2" "$out/$1_cuda" --device cuda --overwrite 2>&1 | tail -1
  cli 120 "$1" "examples/$2" "$out/$1_cpu" --device cpu --overwrite 2>&1 | tail -1
  python3 - "$out/$1_cuda" "$out/$1_cpu" <<'PY'
import sys
from pathlib import Path
import numpy as np
from skimage.io import imread
from skimage.metrics import peak_signal_noise_ratio
cuda, cpu = (Path(a) for a in sys.argv[1:])
for f in sorted(cuda.iterdir()):
    g, c = imread(f).astype(int), imread(cpu / f.name).astype(int)
    print(f"{f.name}: cuda vs cpu {peak_signal_noise_ratio(c, g, data_range=255):.1f} dB, max diff {np.abs(c - g).max()}")
PY
done
step "restoration training on cuda, then a resume"
train=(train pipelines/smoke_train_dehaze.yml "output_dir=$out/smoke_dehaze" train.device=cuda train.tensorboard=false
       "data.train.include=[astronaut.png, chelsea.png, camera.png]")
rm -rf "$out/smoke_dehaze"
cli 180 "${train[@]}" 2>&1 | tail -1
cli 180 "${train[@]}" train.iterations=200 --resume 2>&1 | tail -1
step "RobustSAM anti-degradation training on cuda"
rm -rf "$out/smoke_robustsam"
cli 180 train pipelines/train_robustsam_smoke.yml "output_dir=$out/smoke_robustsam" train.device=cuda 2>&1 | tail -1
step done
