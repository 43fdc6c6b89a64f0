#!/bin/bash
# temporary (bench helper): one device run. GPU numbers first, then quiet-CPU (2 pinned cores) numbers.
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
lscpu | grep -E 'Model name|^CPU\(s\)'; nvidia-smi -L; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
run() { echo; echo "### $*"; timeout "$T" "$@" 2>&1 | grep -v USDT; }
T=40 run python3 bench/train_speed.py --device cuda --dtype bf16 --matmul 8192 --warmup 3 --repeats 15
T=40 run python3 bench/train_speed.py --device cuda --dtype bf16 --batch 128 --matmul 8192 --warmup 3 --repeats 10
T=40 run python3 bench/sample_speed.py --device cuda --dtype bf16 --repeats 5
T=40 run python3 bench/_ab/ab_sample.py --device cuda --dtype bf16 --batch 64 --repeats 5
T=130 run taskset -c 0,1 python3 bench/train_speed.py --threads 2 --repeats 3
T=15 run taskset -c 0,1 python3 bench/_ab/adam.py 2
T=60 run taskset -c 0,1 python3 bench/_ab/ab_sample.py --threads 2 --batch 8 --repeats 1 --cfgs 0
echo done
