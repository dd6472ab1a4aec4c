# One call (~5 minutes): the GPU tests, then issue 22's streaming benchmark at 1x and 10x.
#   [SHARDS=DIR] [STREAM_S=280] bash benchmarks/device/checks.sh   (carry .gl and .whl; results in $OUT; DIR: where
#   train_default.sh may have written the synthetic shards already)
set -o pipefail
source benchmarks/device/setup.sh || exit 1
timeout 200 python3 -m pytest -v -p no:cacheprovider --timeout 150 -m gpu tests 2>&1 | tee $OUT/gputests.log | grep -E "PASS|FAIL|ERROR|passed|failed" | tail -n 30
# the device has no MiniLM weights package: a random BERT of its width (384) costs the same per step
python3 -c "from tiny_models import make_tiny_bert_text_encoder as m; m('/tmp/bert384', hidden_size=384)"
(cd benchmarks && timeout ${STREAM_S:-280} python3 bench_streaming.py --device cuda --text-encoder /tmp/bert384 --out ${SHARDS:-/tmp/bs} \
    2>&1 | tee $OUT/streaming.log | grep -v '^{')
cp ${SHARDS:-/tmp/bs}/results.json $OUT/streaming_results.json
