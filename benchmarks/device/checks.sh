# One call (~9.5 minutes): the GPU tests (gsplat's among them: carry its wheel in .whl), then issue 22's streaming
# benchmark at the full preset (its small-preset figures are in BENCHMARKS.md).
#   [STREAM_S=360] bash benchmarks/device/checks.sh      (carry .gl and .whl; results in $OUT)
set -o pipefail
source benchmarks/device/setup.sh || exit 1
timeout 200 python3 -m pytest -v -p no:cacheprovider --timeout 150 -m gpu tests 2>&1 | tee $OUT/gputests.log \
    | grep -E "PASS|FAIL|ERROR|SKIP|passed|failed" | tail -n 30
# the full preset makes its own random 1024-wide BERT (the device has no OpenCLIP weights)
(cd benchmarks && timeout ${STREAM_S:-360} python3 bench_streaming.py --device cuda --preset full --out /tmp/bsf \
    2>&1 | tee $OUT/streaming_full.log | grep -v '^{')
cp /tmp/bsf/results.json $OUT/streaming_full_results.json
