#!/usr/bin/env bash
# The template's data preparation (run.sh stage 0 runs `$prep CORPUS_DIR DATA_DIR` in the recipe dir):
#   CORPUS_DIR/<set>/...        .wav/.flac files, each with a same-stem .txt transcript; the speaker
#                               is the file's parent folder (one folder per speaker, or per set)
#   CORPUS_DIR/lexicon.txt      WORD PHONE PHONE ... (optional: without it every word is looked up
#                               in CMUdict at stage 1, and words not there become <UNK>)
# -> DATA_DIR/<set> for every folder <set> of CORPUS_DIR that holds audio (local/prepare_folder.py),
#    and DATA_DIR/local/dict/lexicon.txt. Replace it with any script that writes the same files.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 CORPUS_DIR DATA_DIR" >&2; exit 1; }
corpus=$1 data=$2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
n=0
for d in "$corpus"/*/; do
  d=${d%/}
  [ -n "$(find "$d" -type f \( -iname '*.wav' -o -iname '*.flac' \) -print -quit)" ] || continue
  python "$root/local/prepare_folder.py" "$d" "$data/$(basename "$d")"
  n=$((n + 1))
done
[ $n -gt 0 ] || { echo "$0: no folder of .wav/.flac files in $corpus" >&2; exit 1; }
mkdir -p "$data/local/dict"
if [ -f "$corpus/lexicon.txt" ]; then
  cp "$corpus/lexicon.txt" "$data/local/dict/lexicon.txt"
else
  echo "$0: no $corpus/lexicon.txt: every word will be looked up in CMUdict" >&2
  : > "$data/local/dict/lexicon.txt"
fi
