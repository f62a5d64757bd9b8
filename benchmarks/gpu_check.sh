#!/usr/bin/env bash
# The GPU paths, exercised (≤ 8 minutes on one H100): CUDA vs CPU logits, bench pretrain / latency on CUDA,
# 200 pre-training steps of the paper preset's BERT-6 and one fine-tuning epoch of AG News.
# Writes benchmarks/gpu.md and gpu.json. Without CUDA it runs the CPU side and says what it skipped.
# Usage (repo root, data at ../shared/data or $TINYLM_DATA_DIR): bash benchmarks/gpu_check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export TINYLM_DATA_DIR="${TINYLM_DATA_DIR:-../shared/data}"
"$PY" -m tinylm.gpu_check --out "${1:-benchmarks}"
