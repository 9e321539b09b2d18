#!/usr/bin/env bash
# The main job end to end on a tiny default, on the CPU, in a few minutes:
# collect a tiny store and a held-out one of another seed, print the store's stats, train the
# tokenizer briefly, train the teacher (samples PNG + video), then evaluate the teacher on the
# held-out episodes against its baselines. Every stage shows a progress bar. Tiny on purpose:
# bench/bench_world_model.py is the real experiment (docs/experiments.md, "Experiment: world models").
set -euo pipefail
OUT=${DEMO_OUT:-demo_out}
rm -rf "$OUT"
mkdir -p "$OUT"
f1 --version

echo "[demo] 1/5 collect: 6 episodes of 20 actions, 64x64 head and wrist cameras, 2 CPU workers; 2 held-out episodes (seed 1)"
f1 collect --gpus 0 --workers 2 --envs 1 --episodes 6 --steps-per-episode 20 --image-size 64 --out "$OUT/shards"
f1 collect --gpus 0 --workers 2 --envs 1 --episodes 2 --steps-per-episode 20 --image-size 64 --seed 1 --out "$OUT/heldout"

echo "[demo] 2/5 store stats (also writes the action/state normalizer into the store)"
f1 dataset stats "$OUT/shards"

echo "[demo] 3/5 tokenizer, briefly"
f1 train tokenizer --data "$OUT/shards" --output-dir "$OUT/tokenizer" --max-steps 100

echo "[demo] 4/5 teacher: ordered replay, truncated BPTT, GRU memory"
# The store is tiny (6 episodes), so the run replays it for many epochs; --max-steps ends it.
f1 train teacher --data "$OUT/shards" --tokenizer "$OUT/tokenizer" --output-dir "$OUT/teacher" --max-steps 200 \
    --set environment.image_size=[64,64] --set training.epochs=200 --set training.batch_size=2 \
    --set training.log_every=10 --set training.sample_every=100 --set training.save_every=100

echo "[demo] 5/5 evaluate the teacher on the held-out episodes: one step and open loop against copying the frame"
f1 evaluate --checkpoint "$OUT/teacher/checkpoint-200" --data "$OUT/heldout" --episodes 2 --output-dir "$OUT/evaluate"
# (it prints the one-step and k = 8 figures beside their baselines, and where horizon.png and rollout.png are)

echo "[demo] done:"
ls "$OUT/teacher" "$OUT/teacher/samples" "$OUT/teacher/videos" "$OUT/evaluate"
tail -n 1 "$OUT/teacher/episode_metrics.jsonl"
