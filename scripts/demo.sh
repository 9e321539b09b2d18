#!/usr/bin/env bash
# The main job end to end on a tiny default, on the CPU, in a few minutes:
# collect a tiny store, print its stats, train the tokenizer briefly, train the teacher,
# which writes samples (PNG) and a video. Every stage shows a progress bar.
set -euo pipefail
OUT=${DEMO_OUT:-demo_out}
rm -rf "$OUT"
mkdir -p "$OUT"
f1 --version

echo "[demo] 1/4 collect: 6 episodes of 20 actions, 64x64 head and wrist cameras, 2 CPU workers"
f1 collect --gpus 0 --workers 2 --envs 1 --episodes 6 --steps-per-episode 20 --image-size 64 --out "$OUT/shards"

echo "[demo] 2/4 store stats (also writes the action/state normalizer into the store)"
f1 dataset stats "$OUT/shards"

echo "[demo] 3/4 tokenizer, briefly"
f1 train tokenizer --data "$OUT/shards" --output-dir "$OUT/tokenizer" --max-steps 100

echo "[demo] 4/4 teacher: ordered replay, truncated BPTT, GRU memory"
# The store is tiny (6 episodes), so the run replays it for many epochs; --max-steps ends it.
f1 train teacher --data "$OUT/shards" --tokenizer "$OUT/tokenizer" --output-dir "$OUT/teacher" --max-steps 200 \
    --set environment.image_size=[64,64] --set training.epochs=200 --set training.batch_size=2 \
    --set training.log_every=10 --set training.sample_every=100 --set training.save_every=100

echo "[demo] done:"
ls "$OUT/teacher" "$OUT/teacher/samples" "$OUT/teacher/videos"
tail -n 1 "$OUT/teacher/episode_metrics.jsonl"
