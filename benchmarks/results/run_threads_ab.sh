#!/usr/bin/env bash
# Interleaved across processes (OpenMP reads OMP_WAIT_POLICY when torch loads, so each setting needs its
# own process): rounds of {2 threads (OpenMP default wait policy), 2 threads + OMP_WAIT_POLICY=PASSIVE, 1 thread}, teacher, batch 128,
# one epoch on 20% of the train windows each. Usage: bash benchmarks/results/run_threads_ab.sh 3
set -euo pipefail
for r in $(seq 1 "${1:-3}"); do
  for s in default2 passive2 one; do
    case $s in
      default2) env -u OMP_WAIT_POLICY python benchmarks/train_throughput.py --device cpu --models teacher --threads 2 --batch-sizes 128 --rounds 1 --fraction 0.2 | tail -1 | sed "s/^/round $r $s /" ;;
      passive2) env OMP_WAIT_POLICY=PASSIVE python benchmarks/train_throughput.py --device cpu --models teacher --threads 2 --batch-sizes 128 --rounds 1 --fraction 0.2 | tail -1 | sed "s/^/round $r $s /" ;;
      one) python benchmarks/train_throughput.py --device cpu --models teacher --threads 1 --batch-sizes 128 --rounds 1 --fraction 0.2 | tail -1 | sed "s/^/round $r $s /" ;;
    esac
  done
done
