#!/usr/bin/env bash
# The paper profile on a lent GPU machine, in one call (the device tool of this workplace): a speed probe at
# the paper's size, then Table 1 paper-profile cells, two at a time, until the time box ends. Results land in
# $OUT (table1-paper.json/md, speed-paper-gpu.json/md, logs). The Shenzhen folder is carried as DATA.
#   bash benchmarks/gpu_paper.sh DATA SECONDS
set -u
data=${1:?data folder}; budget=${2:-450}
out=${OUT:-benchmarks/results}
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  timeout 80 python3 benchmarks/speed.py --size 256 --width 64 --batch-size 32 --images 96 --rounds 2 \
    --threads 4 --device cuda --results "$out" --name speed-paper-gpu; } > "$out/speed.log" 2>&1
for i in 1 2; do
  timeout "$budget" python3 benchmarks/table1.py --profile paper --seeds 0 --methods vanilla "crl k=50%" \
    --noise 0.75 0.0 --threads 4 --data "$data" --results "$out" --no-checkpoint > "/tmp/worker$i.log" 2>&1 &
  sleep 15
done
wait
cat /tmp/worker*.log > "$out/workers.log"
tail -n 5 "$out/speed.log" "$out/workers.log"
