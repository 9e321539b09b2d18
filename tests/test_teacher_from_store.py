"""`f1 train teacher --data STORE` as typed: sizes and dims from the store, a tokenizer trained first, reused on resume."""

from __future__ import annotations

import json

import pytest

from f1.train.checkpoint import load_checkpoint

from conftest import run_f1
from test_teacher import write_store

pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3 specification")

# Small and fast; nothing here says the store's 32x32 frames, its dims (8) or a tokenizer.
FAST = ["training.batch_size=2", "training.bptt_length=4", "training.warmup_steps=1", "training.save_every=2",
        "training.sample_every=100", "tokenizer.max_steps=2", "tokenizer.batch_size=4"]  # fmt: skip


def teacher(store, out, *extra):
    sets = [arg for s in FAST for arg in ("--set", s)]
    return run_f1("train", "teacher", "--data", store, "--output-dir", out, *sets, *extra)


def test_teacher_takes_the_store_settings_and_trains_a_tokenizer_first(tmp_path):
    store = write_store(tmp_path / "store")  # 32x32 frames, state and action dims 8; the defaults say 128x128 and 32
    out = tmp_path / "out"

    # Only a value the user set that contradicts the store is an error, before anything is written.
    refused = teacher(store, out, "--set", "environment.image_size=[64,64]", "--max-steps", "2")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("error: store") and "32x32" in refused.stderr
    assert not out.exists()

    first = teacher(store, out, "--max-steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    tokenizer = out / "tokenizer"
    assert (tokenizer / "metrics.json").is_file(), "no tokenizer was trained into OUT/tokenizer/"
    assert "training one into" in first.stderr
    ckpt = load_checkpoint(out / "checkpoint-2")
    saved = ckpt.training_state["config"]
    assert saved["environment"]["image_size"] == [32, 32]
    assert (saved["training"]["state_dim"], saved["training"]["action_dim"]) == (8, 8)
    assert ckpt.model["model_config"]["tokenizer_path"] == str(tokenizer.resolve())

    trained = {p.name: p.stat().st_mtime_ns for p in tokenizer.iterdir() if p.is_file()}
    resumed = teacher(store, out, "--max-steps", "3", "--auto_resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "checkpoint-3").is_dir()
    assert "training one into" not in resumed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in tokenizer.iterdir() if p.is_file()} == trained  # reused, untouched
    assert json.loads((tokenizer / "metrics.json").read_text())["steps"] == 2


def test_a_format_2_store_trains_and_after_its_upgrade_a_resume_keeps_its_pinned_snapshot(tmp_path):
    from f1.datasets import open_store, open_writer

    from test_datasets import make_legacy
    from test_teacher import SPEC, make_episode

    store = write_store(tmp_path / "store")
    make_legacy(store)
    out = tmp_path / "out"
    first = teacher(store, out, "--max-steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert load_checkpoint(out / "checkpoint-2").training_state["store_snapshot"] is None  # format 2: nothing to pin

    upgraded = run_f1("dataset", "upgrade", store)
    assert upgraded.returncode == 0, upgraded.stderr[-3000:]
    resumed = teacher(store, out, "--max-steps", "3", "--auto_resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    pin = load_checkpoint(out / "checkpoint-3").training_state["store_snapshot"]
    assert pin == open_store(store).snapshot_id and pin

    # Collection goes on while the teacher trains: a resume still reads the snapshot its run pinned.
    with open_writer(store, "zarr", SPEC, "n0w1", {"test": True}, episodes_per_shard=1) as writer:
        writer.add_episode(*make_episode(50, 12))
    assert open_store(store).snapshot_id != pin
    again = teacher(store, out, "--max-steps", "4", "--auto_resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert load_checkpoint(out / "checkpoint-4").training_state["store_snapshot"] == pin
