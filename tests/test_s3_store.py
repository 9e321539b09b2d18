"""Stores on object storage (`s3://bucket/prefix`) against a real local S3 server (moto's, on 127.0.0.1).

One server for the whole session; each test gets its own bucket. The store
code talks to it through AWS_ENDPOINT_URL, as it would to any S3-compatible
service; nothing in the store's code path is mocked.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from f1.datasets import open_store, open_writer, verify_store
from f1.datasets.manifest import read_manifest
from f1.datasets.s3 import ConflictError, S3Path
from f1.datasets.schema import shard_relpath

from conftest import F1, run_f1
from test_datasets import EPISODES, SPEC

pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3 specification")


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free 127.0.0.1 port, with AWS_* pointing at it for this process and its children."""
    pytest.importorskip("moto")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    moto = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert time.time() < deadline and proc.poll() is None, "moto_server did not start"
            time.sleep(0.1)
    yield env
    proc.terminate()
    proc.wait(timeout=10)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def bucket(s3_server) -> str:
    import boto3

    name = f"f1-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return name


def write_s3_store(url: str, fmt: str, episodes_per_shard: int = 1, worker: str = "n0w0") -> S3Path:
    with open_writer(url, fmt, SPEC, worker, {"test": True}, episodes_per_shard=episodes_per_shard) as writer:
        for arrays, meta in EPISODES:
            writer.add_episode(arrays, meta)
    return S3Path.parse(url)


@pytest.mark.parametrize("fmt", ["zarr", "webdataset"])
def test_both_formats_round_trip_through_s3(bucket, fmt, tmp_path):
    url = f"s3://{bucket}/runs/{fmt}"
    store = write_s3_store(url, fmt)
    assert not (tmp_path / "runs").exists()
    reader = open_store(url)
    assert [e.episode_id for e in reader.episodes] == [m.episode_id for _, m in EPISODES]
    for info, (arrays, meta) in zip(reader.episodes, EPISODES):
        got = reader.read_episode(info)
        for key in SPEC.keys:
            assert np.array_equal(got[key], arrays[key]), (fmt, key, info.episode_id)
        assert reader.episode_meta(info) == meta
        part = reader.read_steps(info, 1, 3, keys=("wrist_rgb", "action"))  # ranged reads of a step range
        assert np.array_equal(part["wrist_rgb"], arrays["wrist_rgb"][1:3])
    if fmt == "zarr":
        assert reader.shard_reader(reader.shards[0]["name"]).fast_image_keys == set(SPEC.frame_keys)  # depth too
    assert verify_store(url) == []
    if fmt == "webdataset":
        return  # the zarr case converts its store to webdataset in the bucket and back through the CLI

    # The CLI takes the URL: stats (normalizer.json into the bucket), verify, convert both ways, show.
    stats = run_f1("dataset", "stats", url, "--json", "--sample-images", "4")
    assert stats.returncode == 0, stats.stderr[-2000:]
    assert json.loads(stats.stdout)["episodes"] == len(EPISODES)
    assert (store / "normalizer.json").is_file()
    assert run_f1("dataset", "verify", url).returncode == 0
    other = "webdataset" if fmt == "zarr" else "zarr"
    there = f"s3://{bucket}/runs/{fmt}-as-{other}"
    assert run_f1("dataset", "convert", url, there, "--format", other).returncode == 0
    back = tmp_path / "back"
    done = run_f1("dataset", "convert", there, back, "--format", fmt)
    assert done.returncode == 0, done.stderr[-2000:]
    local = open_store(back)
    for info, (arrays, _) in zip(local.episodes, EPISODES):
        got = local.read_episode(info)
        assert all(np.array_equal(got[k], arrays[k]) for k in SPEC.keys)
    assert (back / "normalizer.json").read_bytes() == (store / "normalizer.json").read_bytes()
    shown = run_f1("dataset", "show", url, "--episode", "1", "--out", tmp_path / "e1.png")
    assert shown.returncode == 0 and (tmp_path / "e1.png").stat().st_size > 0


def test_a_missing_bucket_is_one_line(s3_server, tmp_path):
    res = run_f1("dataset", "verify", "s3://no-such-bucket-f1/x")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert res.stderr.strip().startswith("error: ") and len(res.stderr.strip().splitlines()) == 1


def test_the_manifest_takes_if_match_and_refuses_a_stale_etag(bucket):
    key = S3Path(bucket, "m/manifest.json")
    first = key.put(b"{}", mode="create")
    with pytest.raises(FileExistsError):
        key.put(b"{}", mode="create")  # If-None-Match: * refuses a second creator
    key.put(b'{"a": 1}', mode={"e_tag": first})
    with pytest.raises(ConflictError):
        key.put(b'{"b": 2}', mode={"e_tag": first})  # another writer changed it since: 412
    assert key.read_bytes() == b'{"a": 1}'


def test_compactions_racing_writers_on_s3_lose_no_record(bucket):
    from test_store_log import race_committers_and_compactors

    race_committers_and_compactors(f"s3://{bucket}/race", writers=3, per_writer=12, compactors=2, rounds=4)


def _write_in_process(url: str, worker: str) -> None:
    write_s3_store(url, "zarr", worker=worker)


def test_two_writers_of_the_same_episodes_at_once_list_each_once_and_verify(bucket):
    url = f"s3://{bucket}/two"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_in_process, args=(url, w)) for w in ("n0w0", "n0w1")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    # The two wrote the same episode ids (a retried task does): a writer that saw the other's shards drops
    # its own; if both committed, readers keep each episode once, from the lower-named shard.
    listed = [e.episode_id for e in open_store(url).episodes]
    assert sorted(listed) == sorted(m.episode_id for _, m in EPISODES)
    assert verify_store(url) == []


# -- f1 collect --out s3://... -----------------------------------------------------------------

T = 6
SMALL = ["--image-size", "32", "--set", "environment.scene_reset_interval=2"]


def _listed(url: str) -> int:
    try:
        return len(read_manifest(S3Path.parse(url))["shards"])
    except Exception:  # noqa: BLE001 - not created yet
        return 0


@pytest.mark.slow
def test_sigkill_mid_collect_to_s3_then_resume_gives_the_exact_episodes(bucket):
    url = f"s3://{bucket}/collect"
    args = [*F1, "collect", "--gpus", "0", "--workers", "2", "--envs", "1", "--episodes", "6", "--out", url,
            "--episodes-per-shard", "1", "--format", "webdataset", "--steps-per-episode", "40", *SMALL]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while _listed(url) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # parent and workers, at once
    proc.wait()
    store = S3Path.parse(url)
    killed_with = len(open_store(url).episodes)
    assert 1 <= killed_with < 6, "the run finished before it could be killed; make it longer"
    assert verify_store(url) == []  # readers trust the manifest: what a killed run left verifies

    # What a writer killed mid-upload could leave: part of a shard under a key no manifest entry lists.
    first = read_manifest(store)["shards"][0]["path"]
    half = store / shard_relpath("shard-n0w0-000050.tar")
    half.put((store / first).read_bytes()[:1000])
    before = {s["name"] for s in read_manifest(store)["shards"]}
    verified = run_f1("dataset", "verify", url)
    assert verified.returncode == 0 and "unlisted" in verified.stdout and "shard-n0w0-000050.tar" in verified.stdout

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)  # takes the dead run's lock over
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    reader = open_store(url)
    assert sorted(e.episode_id for e in reader.episodes) == sorted(f"s0-e{i:07d}" for i in range(6))
    names = [s["name"] for s in reader.shards]
    assert "shard-n0w0-000050.tar" not in names and not half.is_file()  # deleted, never listed
    # The resumed worker continued after the seq it found, so nothing it wrote reuses the half-written key.
    assert all(int(n[len("shard-n0w0-") :].split(".")[0]) > 50 for n in set(names) - before if n.startswith("shard-n0w0-"))
    assert verify_store(url) == []
    assert not (store / "writer-n0.lock").is_file()  # released


# -- training from a bucket ----------------------------------------------------------------------


def test_the_teacher_trains_from_an_s3_store(bucket, tmp_path):
    from test_teacher import write_store
    from test_teacher_from_store import teacher

    url = f"s3://{bucket}/teacher"
    local = write_store(tmp_path / "store")
    assert run_f1("dataset", "convert", local, url, "--format", "zarr").returncode == 0
    out = tmp_path / "out"
    res = teacher(url, out, "--max-steps", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "checkpoint-2").is_dir() and (out / "tokenizer" / "metrics.json").is_file()
    # its token store: on the local filesystem (a memory map needs one), under $F1_TOKEN_CACHE/<bucket>/<prefix>/<key>/
    (meta,) = (Path(os.environ["F1_TOKEN_CACHE"]) / bucket / "teacher").glob("*/token_store.json")
    assert len(list(meta.parent.glob("shards/*/wrist_frames.npy"))) == 2  # one token shard per data shard


# -- Hugging Face datasets -----------------------------------------------------------------------


def test_hugging_face_datasets_loads_the_tars(bucket, tmp_path):
    """load_dataset("webdataset") needs every sample to have the same members (format version 2)."""
    pytest.importorskip("pyarrow")
    url = f"s3://{bucket}/hf"
    store = write_s3_store(url, "webdataset", episodes_per_shard=3)
    tars = []
    for entry in read_manifest(store)["shards"]:
        tars.append(tmp_path / entry["name"])
        tars[-1].write_bytes((store / entry["path"]).read_bytes())
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        import datasets
        assert "site-packages" in datasets.__file__, datasets.__file__  # Hugging Face's, not the repo's folder
        ds = datasets.load_dataset("webdataset", data_files={"train": sys.argv[1:]}, split="train")
        print(json.dumps({"n": len(ds), "columns": sorted(ds.column_names), "key4": ds[4]["__key__"],
                          "state4": np.asarray(ds[4]["state.npy"]).tolist(), "flags4": ds[4]["flags.json"],
                          "wrist4": np.asarray(ds[4]["wrist_rgb.png"]).tolist(),
                          "cameras4": ds[4].get("cameras.json"),
                          "depth4": np.asarray(ds[4]["wrist_depth.png"]).tolist() if "wrist_depth.png" in ds[4] else None}))
        """
    )
    res = subprocess.run([sys.executable, "-c", script, *map(str, tars)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)  # fmt: skip  (cwd outside the repo: its datasets/ would shadow HF's)
    if res.returncode != 0 and "No module named 'datasets'" in res.stderr:
        pytest.skip("Hugging Face datasets is not installed (the dev extra installs it)")
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["n"] == sum(m.length for _, m in EPISODES)
    members = ["head_rgb.png", "wrist_rgb.png", "state.npy", "action.npy", "flags.json"]
    if SPEC.object_slots:
        members.append("object_pose.npy")
    if SPEC.camera_geometry:
        members.append("cameras.json")
    members += [f"{key}.png" for key in SPEC.depth_keys]
    assert got["columns"] == sorted(["__key__", "__url__", *members])
    arrays, meta = EPISODES[1]
    k = 4 - EPISODES[0][1].length
    assert got["key4"] == f"{meta.episode_id}_{k:06d}"
    assert np.array_equal(np.array(got["state4"], np.float32), arrays["state"][k])
    assert np.array_equal(np.array(got["wrist4"], np.uint8), arrays["wrist_rgb"][k])
    flags = {"is_first": k == 0, "is_last": False, "is_terminal": False}
    if SPEC.object_slots:
        flags.update(object_valid=arrays["object_valid"][k].tolist(), object_contact=bool(arrays["object_contact"][k]))
    assert got["flags4"] == flags
    if SPEC.camera_geometry:  # poses and intrinsics as nested lists, exactly; the depth PNG as uint16 millimetres
        assert np.array_equal(np.array(got["cameras4"]["wrist_pose"], np.float32), arrays["wrist_pose"][k])
        assert np.array_equal(np.array(got["depth4"]), arrays["wrist_depth"][k])


def test_record_writes_rollouts_into_a_bucket_and_a_rerun_skips_them(bucket):
    """--record s3://...: the online phases' recorder, as they call it, into a bucket."""
    from f1.collect.store_spec import collection_spec
    from f1.shared.config import load_config
    from f1.train.online.record import RolloutRecorder, check_record_store

    from test_datasets import make_episode

    url = f"s3://{bucket}/record"
    cfg = load_config(None, ["environment.image_size=[32,32]", "collect.format=webdataset"])
    spec = collection_spec(cfg)
    episodes = [make_episode(i, n, spec) for i, n in enumerate([3, 4])]
    check_record_store(url, cfg)  # nothing there yet: fine
    for _ in range(2):  # the second run finds both episodes recorded and skips them
        recorder = RolloutRecorder(url, cfg, "student", 0)
        recorder.add(episodes)
        recorder.close()
    assert (recorder.written, recorder.skipped) == (0, 2)
    reader = open_store(url)
    assert [e.episode_id for e in reader.episodes] == [m.episode_id for _, m in episodes]
    assert np.array_equal(reader.read_episode(reader.episodes[1])["wrist_rgb"], episodes[1][0]["wrist_rgb"])
    assert verify_store(url) == []
    other = load_config(None, ["environment.image_size=[32,32]", "collect.format=zarr"])
    with pytest.raises(Exception, match="holds webdataset shards"):
        check_record_store(url, other)
