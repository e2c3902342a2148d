#!/bin/bash
# one-shot GPU check for lvae_np; run from the repo root on the device machine
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .devrun/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
cd "$PWD"
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc;
  python3 -c "import cupy, numpy, sys; print('python', sys.version.split()[0], 'cupy', cupy.__version__, 'numpy', numpy.__version__, 'cuda', cupy.cuda.runtime.runtimeGetVersion())"; } 2>&1 | tee $OUT/env.txt
echo "== gpu_check"
timeout 240 python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json --lk-images 1000 2>&1 | tee $OUT/gpu_check.log
echo "== pytest -m gpu (real CuPy)"
timeout 200 python3 -m pytest -m gpu -p no:nbmake -p no:cacheprovider -o addopts="" -q -rs tests > $OUT/pytest_gpu.log 2>&1; echo "pytest rc $?"; tail -25 $OUT/pytest_gpu.log
echo "== train CLI, 2 epochs, one process"
t0=$(date +%s.%N)
timeout 120 python3 -m lvae_np.train --backend cupy --epochs 2 --out /tmp/r1 --no-progress 2>&1 | tail -4
t1=$(date +%s.%N); echo "one process: $(python3 -c "print(round($t1-$t0,1))") s"
echo "== train CLI, 2 epochs, six processes at once"
t0=$(date +%s.%N)
for i in 1 2 3 4 5 6; do timeout 150 python3 -m lvae_np.train --backend cupy --epochs 2 --seed $i --out /tmp/p$i --no-progress > /tmp/p$i.log 2>&1 & done; wait
t1=$(date +%s.%N); echo "six processes: $(python3 -c "print(round($t1-$t0,1))") s"
grep -h "^epoch" /tmp/p*.log | tail -12
{ grep -h "^epoch" /tmp/p*.log; } > $OUT/concurrency.log
