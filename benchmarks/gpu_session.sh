#!/usr/bin/env bash
# The one prepared device session (about 5 minutes on an H100), run from the repository root:
#   VAEKIT_DATA=path/to/data bash benchmarks/gpu_session.sh
# 1. gpu.py: the GPU checks, examples/s per mode, the k=5000 NLL, the cost of bf16 in nats;
# 2. the CLI end to end on the GPU: train with CUDA graphs + compile + bf16 for 4 epochs, the same
#    stopped after 2 and resumed (the weights must match), evaluate on the GPU;
# 3. the fast MNIST recipe (benchmarks/mnist_fast.py) on the GPU: its test NLL and training time;
# 4. the deep top-down recipe (benchmarks/deep.py, issue 24) with convolutions, bf16, compile and CUDA graphs:
#    what a top-down step costs against a plain one, then 150 epochs and the k = 5000 test NLL (aim ≤ 80.0).
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 VAEKIT_DATA=${VAEKIT_DATA:-$PWD/../shared/data}
tmp=$(mktemp -d)
fast="--device auto --cuda-graphs --compile --precision bf16 --dataset mnist"
(cd benchmarks && python3 gpu.py --budget 120)
echo "== CLI on the GPU"
python3 -m vaekit --quiet train $fast --epochs 4 --out "$tmp/a" | grep trained
python3 -m vaekit --quiet train $fast --epochs 2 --out "$tmp/b" | grep trained
python3 -m vaekit --quiet train --resume --epochs 4 --out "$tmp/b" --device auto | grep trained
python3 - "$tmp/a" "$tmp/b" <<'PY'
import sys
from safetensors.torch import load_file
a, b = (load_file(f"{d}/model.safetensors") for d in sys.argv[1:])
diff = max((a[k] - b[k]).abs().max().item() for k in a)
print(f"4 epochs straight vs 2 + resumed 2: max |Δθ| = {diff:.3g}", "OK" if diff == 0 else "DIFFERENT")
PY
python3 -m vaekit evaluate "$tmp/a" --device auto --k 5000 | head -6
echo "== fast MNIST recipe on the GPU"
(cd benchmarks && python3 mnist_fast.py --device cuda --cuda-graphs --compile --epochs 125 --eval-k 5000 | tail -3)
echo "== deep top-down recipe on the GPU"
(cd benchmarks && python3 deep.py --speed --device cuda --steps 50 --repeats 2 | tail -1)
(cd benchmarks && python3 deep.py --device cuda --arch conv --precision bf16 --compile --cuda-graphs --epochs 150 \
   --eval-k 5000 --json results/deep_gpu.json | tail -2)
