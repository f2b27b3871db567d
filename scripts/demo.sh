#!/usr/bin/env bash
# The main job end to end on the built-in default: Multi30k German->English.
# Prepare the data, train the `small` model for DEMO_MINUTES (default 10) of
# training time, average the last checkpoints, translate a few test sentences and
# print the test BLEU. Running it again resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
TMT=.venv/bin/transformer-mt
OUT=${DEMO_DIR:-runs/demo}
MINUTES=${DEMO_MINUTES:-10}
DATA_DIR=${MULTI30K_DIR:-../shared/data/multi30k}
if [ -d "$DATA_DIR" ]; then source_flag=(--data-dir "$DATA_DIR"); else source_flag=(); fi

if [ ! -f "$OUT/data/data.json" ]; then
    $TMT prepare --dataset multi30k "${source_flag[@]}" --src-lang de --tgt-lang en \
        --vocab-size 8000 --out "$OUT/data" > /dev/null
fi
$TMT train --data "$OUT/data" --save-dir "$OUT/model" --resume --preset small \
    --max-time "${MINUTES}m" --max-tokens 2500 --warmup 800 --lr-scale 1.5 \
    --valid-every 100 --valid-bleu-sentences 200 --log-every 50 --keep-last 3 > /dev/null
$TMT average --run "$OUT/model" --last 3 > /dev/null
echo "== a few test sentences (German -> English) =="
head -n 5 "$OUT/data/test.src.txt" | $TMT -q translate --checkpoint "$OUT/model/averaged"
echo "== test_2016_flickr, beam 4, sacreBLEU =="
$TMT -q evaluate --checkpoint "$OUT/model/averaged" --data "$OUT/data" --split test \
    --output "$OUT/test.hyp.en"
