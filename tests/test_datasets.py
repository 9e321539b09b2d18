"""Episode stores: round trips, convert, verify's fault finding, crash safety, plain-tool access, stats, CLI errors."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from f1.datasets import EpisodeMeta, SchemaError, StoreError, StoreSpec, open_store, open_writer, verify_store
from f1.datasets.convert import main as convert
from f1.datasets.manifest import shard_checksum
from f1.datasets.schema import FORMAT_VERSION, MANIFEST_NAME, shard_relpath
from f1.datasets.stats import compute_stats
from f1.datasets.stats import main as stats_main
from f1.datasets.verify import main as verify_main
from f1.shared.normalizers import NORMALIZER_FILE, load_normalizers

# zarr-python warns that numcodecs' Delta is outside the v3 spec; f1.datasets.codecs silences it process-wide,
# but pytest resets warning filters per test.
pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3 specification")

# Format 4 with 3 object slots, camera poses and wrist depth, so every round trip, convert and verify below
# carries the object and camera keys too.
SPEC = StoreSpec(
    image_hw=(32, 32), state_dim=12, action_dim=10, real_state_dims=11, real_action_dims=8, control_freq=10, object_slots=3,
    camera_geometry=True, depth_cameras=("wrist",),
)  # fmt: skip
SPEC_V3 = StoreSpec.from_dict({**SPEC.to_dict(), "camera_geometry": False, "depth_cameras": []})  # what a format-2/3 store holds
SPEC_V1 = StoreSpec.from_dict({**SPEC_V3.to_dict(), "object_slots": 0})  # what a format-1 store holds
LENGTHS = [4, 6, 3, 5, 7]  # N = T + 1 per episode


def make_episode(i: int, n: int, spec: StoreSpec = SPEC) -> tuple[dict[str, np.ndarray], EpisodeMeta]:
    """Image-like frames (gradient + a moving square + noise), padded vectors, correct markers."""
    rng = np.random.default_rng(i)
    h, w = spec.image_hw
    yy, xx = np.mgrid[0:h, 0:w]
    arrays = {}
    for c, key in enumerate(spec.image_keys):
        frames = np.empty((n, h, w, 3), np.uint8)
        for k in range(n):
            img = np.stack([xx * 4 + 10 * c, yy * 3 + 20 * k, (xx + yy) * 2 + 7 * i], axis=-1).astype(np.int32)
            img[5 + k : 12 + k, 8 + i : 15 + i] = (200, 30 * c, 90)
            frames[k] = np.clip(img + rng.integers(-3, 4, img.shape), 0, 255)
        arrays[key] = frames
    state = np.zeros((n, spec.state_dim), np.float32)
    state[:, : spec.real_state_dims] = rng.normal(size=(n, spec.real_state_dims))
    action = np.zeros((n, spec.action_dim), np.float32)
    action[:-1, : spec.real_action_dims] = rng.uniform(-1, 1, size=(n - 1, spec.real_action_dims))
    k = np.arange(n)
    arrays.update(state=state, action=action, is_first=k == 0, is_last=k == n - 1, is_terminal=(k == n - 1) & (i % 2 == 1))
    if spec.object_slots:
        valid = np.zeros((n, spec.object_slots), bool)
        valid[:, : 1 + i % spec.object_slots] = True  # episode i has 1 + i % slots objects on the table
        quat = rng.normal(size=(n, spec.object_slots, 4))
        pose = np.concatenate([rng.normal(size=(n, spec.object_slots, 3)), quat / np.linalg.norm(quat, axis=-1, keepdims=True)], -1)
        arrays.update(
            object_pose=np.where(valid[..., None], pose, 0).astype(np.float32),
            object_valid=valid,
            object_contact=(k > 0) & (k % 2 == i % 2),
        )
    for c, cam in enumerate(spec.cameras if spec.camera_geometry else ()):
        q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))  # (n, 3, 3) orthonormal
        q *= np.sign(np.linalg.det(q))[:, None, None]  # proper rotations
        pose = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
        pose[:, :3, :3], pose[:, :3, 3] = q, rng.normal(size=(n, 3))
        arrays[f"{cam}_pose"] = pose
        arrays[f"{cam}_intrinsics"] = np.tile(np.array([[40.0 + c, 0, 15.5], [0, 40.0 + c, 15.5], [0, 0, 1]], np.float32), (n, 1, 1))
    for key in spec.depth_keys:
        arrays[key] = (300 + 10 * yy + xx + 50 * np.arange(n)[:, None, None] + rng.integers(0, 3, (n, h, w))).astype(np.uint16)
    meta = EpisodeMeta(f"s0-e{i:07d}", seed=1000 + i, scene_id=i // 2, randomization={"light": 0.25 * i, "objects": [i, 2]}, length=n)
    return arrays, meta


EPISODES = [make_episode(i, n) for i, n in enumerate(LENGTHS)]


def write_store(
    path: Path, fmt: str, episodes=EPISODES, per_shard: int = 2, background: bool = False, worker: str = "n0w0", spec=SPEC, **kw
):
    with open_writer(path, fmt, spec, worker, {"collect": {"seed": 0}}, per_shard, background=background, **kw) as w:
        for arrays, meta in episodes:
            w.add_episode(arrays, meta)
    return path


def shard_at(store: Path, name: str) -> Path:
    """Where a format-3 writer put shard `name` (or its sidecar) in `store`."""
    return store / shard_relpath(name)


def make_legacy(store: Path, version: int = 2) -> None:
    """Rewrite a format-3 store as f1 wrote it before format 3: shards at the top level, every entry in manifest.json."""
    import shutil

    from f1.datasets.manifest import read_manifest

    manifest = read_manifest(store)
    for entry in manifest["shards"]:
        for p in (store / entry["path"]).parent.glob(entry["name"] + "*"):
            p.rename(store / p.name)
        del entry["path"]
    manifest["format_version"] = version
    for folder in ("shards", "log", "checkpoints", "index"):
        shutil.rmtree(store / folder, ignore_errors=True)
    (store / "_last_checkpoint").unlink(missing_ok=True)
    (store / MANIFEST_NAME).write_text(json.dumps(manifest))


def assert_same_store(reader, episodes):
    assert [e.episode_id for e in reader.episodes] == [m.episode_id for _, m in episodes]
    for info, (arrays, meta) in zip(reader.episodes, episodes):
        got = reader.read_episode(info)
        assert set(got) == set(arrays)
        for key in arrays:
            assert got[key].dtype == arrays[key].dtype and np.array_equal(got[key], arrays[key]), (info.episode_id, key)
        assert reader.episode_meta(info) == meta
        assert (info.length, info.seed, info.scene_id) == (meta.length, meta.seed, meta.scene_id)


@pytest.mark.parametrize("fmt", ["zarr", "webdataset"])
@pytest.mark.parametrize("background", [False, True])
def test_round_trip(tmp_path, fmt, background):
    store = write_store(tmp_path / "s", fmt, background=background)
    reader = open_store(store)
    assert [s["name"] for s in reader.shards] == [f"shard-n0w0-{i:06d}{'.zarr' if fmt == 'zarr' else '.tar'}" for i in range(3)]
    assert [len(s["episodes"]) for s in reader.shards] == [2, 2, 1]
    assert_same_store(reader, EPISODES)
    # A step range inside an episode, a subset of keys: exactly those steps.
    info = reader.episodes[3]
    part = reader.read_steps(info, 1, 4, ["wrist_rgb", "is_last", "action"])
    assert set(part) == {"wrist_rgb", "is_last", "action"}
    for key in part:
        assert np.array_equal(part[key], EPISODES[3][0][key][1:4]), key
    # iter_shard gives the same episodes in order.
    metas = [m.episode_id for s in reader.shards for m, _ in reader.iter_shard(s["name"])]
    assert metas == [m.episode_id for _, m in EPISODES]
    with pytest.raises(IndexError):
        reader.read_steps(info, 0, info.length + 1)
    assert verify_store(store) == []


def test_resume_never_overwrites_and_spec_must_match(tmp_path):
    store = write_store(tmp_path / "s", "zarr", episodes=EPISODES[:3])
    write_store(store, "zarr", episodes=EPISODES[3:])  # same worker: seq continues after 000001
    names = [s["name"] for s in open_store(store).shards]
    assert names == ["shard-n0w0-000000.zarr", "shard-n0w0-000001.zarr", "shard-n0w0-000002.zarr"]
    assert [len(s["episodes"]) for s in open_store(store).shards] == [2, 1, 2]
    assert_same_store(open_store(store), EPISODES)
    other = StoreSpec(**{**SPEC.to_dict(), "state_dim": 16})
    with pytest.raises(StoreError, match="different spec"):
        open_writer(store, "zarr", other, "n0w1", {}, 2)
    with pytest.raises(StoreError, match="holds zarr shards"):
        open_writer(store, "webdataset", SPEC, "n0w1", {}, 2)
    with pytest.raises(StoreError, match="does not apply to zarr"):
        open_writer(tmp_path / "new", "zarr", SPEC, "n0w1", {}, 2, image_codec="png")


def test_writer_rejects_bad_episodes(tmp_path):
    arrays, meta = make_episode(0, 5)
    with open_writer(tmp_path / "s", "zarr", SPEC, "n0w0", {}, 2) as writer:
        doubled = {**arrays, "is_first": arrays["is_first"].copy()}
        doubled["is_first"][2] = True
        with pytest.raises(SchemaError, match=r"is_first must be set at step 0 only, found at steps \[0, 2\]"):
            writer.add_episode(doubled, meta)
        with pytest.raises(SchemaError, match="state is float64"):
            writer.add_episode({**arrays, "state": arrays["state"].astype(np.float64)}, meta)
        with pytest.raises(SchemaError, match="no dots"):
            writer.add_episode(arrays, EpisodeMeta("a.b", 0, 0, {}, 5))
        padded = {**arrays, "action": arrays["action"].copy()}
        padded["action"][1, 9] = 1.0
        with pytest.raises(SchemaError, match="action padding dim 9 is nonzero at step 1"):
            writer.add_episode(padded, meta)


@pytest.mark.parametrize("first,second", [("zarr", "webdataset"), ("webdataset", "zarr")])
def test_convert_round_trip_is_bit_exact(tmp_path, first, second):
    src = write_store(tmp_path / "src", first)
    convert(src, tmp_path / "mid", second)
    convert(tmp_path / "mid", tmp_path / "back", first)
    for path in ("mid", "back"):
        reader = open_store(tmp_path / path)
        assert_same_store(reader, EPISODES)
        assert verify_store(tmp_path / path) == []
        assert reader.manifest["collection_config"] == open_store(src).manifest["collection_config"]
    back = open_store(tmp_path / "back")
    assert [s["name"] for s in back.shards] == [s["name"] for s in open_store(src).shards]
    assert back.spec == open_store(src).spec
    with pytest.raises(StoreError, match="not empty"):
        convert(src, tmp_path / "mid", second)


def _make_format_1(store: Path) -> None:
    """Turn a store written with SPEC_V1 into what f1 wrote before format 2: no object_slots in any spec, version 1."""
    from f1.datasets.manifest import shard_bytes, shard_checksum

    make_legacy(store, version=1)
    manifest = json.loads((store / MANIFEST_NAME).read_text())
    for key in ("object_slots", "camera_geometry", "depth_cameras"):
        manifest["spec"].pop(key)
    manifest["format_version"] = 1
    for entry in manifest["shards"]:
        group = store / entry["name"] / "zarr.json"
        if group.exists():  # a Zarr shard keeps its own copy of the spec and version in its attributes
            meta = json.loads(group.read_text())
            for key in ("object_slots", "camera_geometry", "depth_cameras"):
                meta["attributes"]["spec"].pop(key)
            meta["attributes"]["f1_format_version"] = 1
            group.write_text(json.dumps(meta))
            entry["bytes"], entry["checksum"] = shard_bytes(store / entry["name"]), shard_checksum(store / entry["name"])
    (store / MANIFEST_NAME).write_text(json.dumps(manifest))


@pytest.mark.parametrize("fmt,other", [("zarr", "webdataset"), ("webdataset", "zarr")])
def test_a_format_1_store_without_object_keys_still_reads_verifies_and_converts(tmp_path, fmt, other):
    episodes = [make_episode(i, n, SPEC_V1) for i, n in enumerate(LENGTHS[:3])]
    assert not {"object_pose", "object_valid", "object_contact"} & set(episodes[0][0])
    store = write_store(tmp_path / "v1", fmt, episodes=episodes, spec=SPEC_V1)
    _make_format_1(store)
    assert "object_slots" not in json.loads((store / MANIFEST_NAME).read_text())["spec"]
    reader = open_store(store)
    assert reader.manifest["format_version"] == 1 and reader.spec.object_slots == 0 and reader.spec.keys == SPEC_V1.keys
    assert_same_store(reader, episodes)
    assert verify_store(store) == []
    assert compute_stats(reader, sample_images=2)["exploration"] is None  # nothing to count without the poses
    convert(store, tmp_path / "converted", other)
    assert_same_store(open_store(tmp_path / "converted"), episodes)
    # A writer asks for the upgrade first; then appending with the same (format-1) settings works, and a
    # writer of object keys is refused by name.
    with pytest.raises(StoreError, match="f1 dataset upgrade"):
        open_writer(store, fmt, SPEC_V1, "n0w1", {}, 2)
    from f1.datasets.upgrade import upgrade

    assert upgrade(store) == 1
    write_store(store, fmt, episodes=[make_episode(7, 4, SPEC_V1)], spec=SPEC_V1, worker="n0w1")
    assert len(open_store(store).episodes) == 4 and open_store(store).manifest["format_version"] == FORMAT_VERSION
    assert verify_store(store) == []
    with pytest.raises(StoreError, match="object_slots"):
        open_writer(store, fmt, SPEC, "n0w2", {}, 2)


def _make_format_3(store: Path) -> None:
    """Turn a store written with SPEC_V3 into what f1 wrote before format 4: version 3, no camera fields in any spec."""
    from f1.datasets.manifest import shard_bytes, shard_checksum

    manifest = json.loads((store / MANIFEST_NAME).read_text())
    for key in ("camera_geometry", "depth_cameras"):
        manifest["spec"].pop(key)
    manifest["format_version"] = 3
    (store / MANIFEST_NAME).write_text(json.dumps(manifest))
    for group in store.glob("shards/*/*/*.zarr/zarr.json"):  # the shards' own copies (the log keeps their checksums)
        meta = json.loads(group.read_text())
        for key in ("camera_geometry", "depth_cameras"):
            meta["attributes"]["spec"].pop(key)
        meta["attributes"]["f1_format_version"] = 3
        group.write_text(json.dumps(meta))
        for record in store.glob("log/*/*/*.json"):
            entry = json.loads(record.read_text())
            if entry["name"] == group.parent.name:
                entry["bytes"], entry["checksum"] = shard_bytes(group.parent), shard_checksum(group.parent)
                record.write_text(json.dumps(entry))


@pytest.mark.parametrize("fmt,other", [("zarr", "webdataset"), ("webdataset", "zarr")])
def test_a_format_3_store_without_camera_keys_still_reads_verifies_converts_and_upgrades(tmp_path, fmt, other):
    episodes = [make_episode(i, n, SPEC_V3) for i, n in enumerate(LENGTHS[:3])]
    assert not {"wrist_pose", "wrist_intrinsics", "wrist_depth", "head_pose"} & set(episodes[0][0])
    store = write_store(tmp_path / "v3", fmt, episodes=episodes, spec=SPEC_V3, per_shard=3)
    _make_format_3(store)
    reader = open_store(store)
    assert reader.manifest["format_version"] == 3 and reader.spec.keys == SPEC_V3.keys and reader.spec.camera_keys == ()
    assert_same_store(reader, episodes)
    assert verify_store(store) == []
    convert(store, tmp_path / "converted", other)
    assert_same_store(open_store(tmp_path / "converted"), episodes)
    # The same settings append to it; a writer of camera keys is refused by name.
    with pytest.raises(StoreError, match="camera_geometry"):
        open_writer(store, fmt, SPEC, "n0w2", {}, 2)
    from f1.datasets.upgrade import upgrade

    assert upgrade(store) == 3 and upgrade(store) is None
    assert open_store(store).manifest["format_version"] == FORMAT_VERSION and (store / "manifest.v3.json").is_file()
    write_store(store, fmt, episodes=[make_episode(7, 4, SPEC_V3)], spec=SPEC_V3, worker="n0w1")
    assert len(open_store(store).episodes) == 4 and verify_store(store) == []


def test_writer_rejects_bad_camera_keys(tmp_path):
    arrays, meta = make_episode(2, 5)
    for key, fix in [
        ("wrist_pose", lambda a: a.__setitem__((3, 0, 0), 2.0)),  # not a rotation
        ("head_intrinsics", lambda a: a.__setitem__((1, 2, 2), 0.0)),  # last row not 0 0 1
        ("wrist_pose", lambda a: a.__setitem__((0, 1, 3), np.nan)),
    ]:
        bad = {k: v.copy() for k, v in arrays.items()}
        fix(bad[key])
        with open_writer(tmp_path / key, "zarr", SPEC, "n0w0", {}, 2) as w:
            with pytest.raises(SchemaError, match=key):
                w.add_episode(bad, meta)
    bad = {**arrays, "wrist_depth": arrays["wrist_depth"].astype(np.float32)}
    with open_writer(tmp_path / "depth", "zarr", SPEC, "n0w0", {}, 2) as w:
        with pytest.raises(SchemaError, match="wrist_depth is float32"):
            w.add_episode(bad, meta)


def test_writer_rejects_bad_object_keys(tmp_path):
    arrays, meta = make_episode(2, 5)
    with open_writer(tmp_path / "s", "zarr", SPEC, "n0w0", {}, 2) as writer:
        ghost = {**arrays, "object_pose": arrays["object_pose"].copy()}
        ghost["object_pose"][3, 2, 0] = 0.1  # episode 2 has slots 0..2 valid: make slot 2 invalid instead
        with pytest.raises(SchemaError, match="object_pose slot 1 is nonzero at step 0 where object_valid is False"):
            writer.add_episode({**ghost, "object_valid": np.tile([True, False, True], (5, 1))}, meta)
        skewed = {**arrays, "object_pose": arrays["object_pose"].copy()}
        skewed["object_pose"][1, 0, 3:] *= 2
        with pytest.raises(SchemaError, match="slot 0 at step 1 has a quaternion of norm 2.0000"):
            writer.add_episode(skewed, meta)
        with pytest.raises(SchemaError, match="keys missing .'object_contact'."):
            writer.add_episode({k: v for k, v in arrays.items() if k != "object_contact"}, meta)


# -- verify finds planted faults ---------------------------------------------------------------


def _rewrite_tar(path: Path, keep) -> None:
    """Copy the tar member by member, keeping those for which keep(name) is true."""
    members = []
    with tarfile.open(path) as tar:
        for info in tar:
            if keep(info.name):
                members.append((info, tar.extractfile(info).read()))
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))


def _problems(store: Path, capsys) -> list[str]:
    problems = verify_store(store)
    assert verify_main(store) == 1
    printed = capsys.readouterr().out
    assert all(p in printed for p in problems), (printed, problems)
    return problems


def test_verify_finds_a_missing_step(tmp_path, capsys):
    store = write_store(tmp_path / "s", "webdataset")
    _rewrite_tar(shard_at(store, "shard-n0w0-000001.tar"), lambda name: not name.startswith("s0-e0000003_000002."))
    problems = _problems(store, capsys)
    assert any("shard-n0w0-000001.tar: episode 's0-e0000003': step 3 follows step 1 (expected 2)" in p for p in problems), problems
    assert any("checksum" in p for p in problems), problems
    assert not any("shard-n0w0-000000" in p or "shard-n0w0-000002" in p for p in problems), problems


def test_verify_finds_a_doubled_is_first(tmp_path, capsys):
    import zarr

    store = write_store(tmp_path / "s", "zarr")
    group = zarr.open_group(str(shard_at(store, "shard-n0w0-000000.zarr")), mode="r+")
    flags = group["data/is_first"][:]
    flags[4 + 2] = True  # episode 1 (after episode 0's 4 steps), its step 2
    group["data/is_first"][:] = flags
    problems = _problems(store, capsys)
    assert any(
        "shard-n0w0-000000.zarr: episode 's0-e0000001': is_first must be set at step 0 only, found at steps [0, 2]" in p
        for p in problems
    ), problems


def test_verify_finds_a_truncated_shard(tmp_path, capsys):
    store = write_store(tmp_path / "s", "webdataset")
    shard = shard_at(store, "shard-n0w0-000002.tar")
    os.truncate(shard, shard.stat().st_size // 2)
    problems = _problems(store, capsys)
    assert any("shard-n0w0-000002.tar:" in p and "truncated" in p for p in problems), problems
    with pytest.raises(StoreError, match="shard-n0w0-000002.tar has .* bytes, the store lists .*truncated"):
        open_store(store).read_episode("s0-e0000004")
    assert open_store(store).read_episode("s0-e0000000")["state"].shape == (4, 12)  # other shards still read


def test_verify_finds_a_checksum_mismatch(tmp_path, capsys):
    store = write_store(tmp_path / "s", "webdataset")
    shard = shard_at(store, "shard-n0w0-000000.tar")
    info = open_store(store).episodes[1]
    offset, size = np.load(shard_at(store, "shard-n0w0-000000.tar.idx.npy"))[info.start + 1, 2]  # state.npy of its step 1
    with open(shard, "r+b") as f:  # same size, still a valid float32: only the checksum can tell
        f.seek(int(offset + size - SPEC.state_dim * 4))  # state[0], a real dim
        f.write(np.float32(0.5).tobytes())
    problems = _problems(store, capsys)
    assert len(problems) == 1 and "shard-n0w0-000000.tar: checksum" in problems[0], problems


def test_verify_finds_duplicate_ids_and_missing_shards(tmp_path, capsys):
    import shutil

    store = write_store(tmp_path / "s", "zarr", episodes=EPISODES[:2], worker="n0w0")
    # A format-2 store (format 3 reads an id listed twice once: test_store_log): the duplicate is put in by
    # hand, as merging two stores by hand or a store written before the writers' check could.
    other = write_store(tmp_path / "o", "zarr", episodes=EPISODES[1:3], worker="n0w1")
    make_legacy(store)
    make_legacy(other)
    shutil.move(other / "shard-n0w1-000000.zarr", store)
    manifest = json.loads((store / MANIFEST_NAME).read_text())
    manifest["shards"] += json.loads((other / MANIFEST_NAME).read_text())["shards"]
    (store / MANIFEST_NAME).write_text(json.dumps(manifest))

    shutil.rmtree(store / "shard-n0w0-000000.zarr")
    problems = _problems(store, capsys)
    assert any("episode 's0-e0000001' also in shard-n0w0-000000.zarr (duplicate id)" in p for p in problems), problems
    assert any(p == "shard-n0w0-000000.zarr: missing (listed in the store)" for p in problems), problems


# -- crash safety and concurrency ----------------------------------------------------------------

_CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from test_datasets import LENGTHS, SPEC, make_episode
from f1.datasets import open_writer
writer = open_writer({store!r}, {fmt!r}, SPEC, {worker!r}, {{}}, {per_shard})
for arrays, meta in [make_episode({first} + i, n) for i, n in enumerate(LENGTHS[: {count}])]:
    writer.add_episode(arrays, meta)
print("ready", flush=True)
{after}
"""


def _child(store: Path, fmt: str, worker: str, per_shard: int, count: int, after: str, first: int = 0) -> subprocess.Popen:
    """A writer process adding episodes first .. first + count - 1 (EPISODES' first `count` for first=0)."""
    code = _CHILD.format(tests=str(Path(__file__).parent), store=str(store), fmt=fmt, worker=worker,
                         per_shard=per_shard, count=count, after=after, first=first)  # fmt: skip
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["zarr", "webdataset"])
def test_writer_killed_mid_shard_leaves_no_visible_partial_shard(tmp_path, fmt):
    store = tmp_path / "s"
    child = _child(store, fmt, "n0w0", per_shard=2, count=3, after="time.sleep(120)")
    try:
        assert child.stdout.readline().strip() == "ready"
        chunk = store / "shards" / "n0w0" / "0000"
        leftovers = [p.name for p in chunk.iterdir() if p.name.endswith(".tmp")]
        assert leftovers == [f"shard-n0w0-000001.{'zarr' if fmt == 'zarr' else 'tar'}.tmp"], sorted(os.listdir(chunk))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    reader = open_store(store)
    assert [e.episode_id for e in reader.episodes] == ["s0-e0000000", "s0-e0000001"]
    assert verify_store(store) == []
    # The next writer of that worker clears the leftover and continues after it.
    write_store(store, fmt, episodes=EPISODES[2:], worker="n0w0")
    assert not [p for p in os.listdir(chunk) if ".tmp" in p]
    assert_same_store(open_store(store), EPISODES)
    assert verify_store(store) == []


@pytest.mark.slow
def test_concurrent_writers_keep_every_manifest_entry(tmp_path):
    store = tmp_path / "s"
    children = [_child(store, "webdataset", f"n0w{w}", per_shard=1, count=5, after="writer.close()", first=5 * w) for w in range(2)]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
        assert child.wait(timeout=120) == 0
    reader = open_store(store)
    assert sorted(s["name"] for s in reader.shards) == [f"shard-n0w{w}-{i:06d}.tar" for w in range(2) for i in range(5)]
    assert sorted(e.episode_id for e in reader.episodes) == [f"s0-e{i:07d}" for i in range(10)]
    assert verify_store(store) == []


# -- plain tools read the stores -----------------------------------------------------------------


def test_plain_zarr_reads_a_shard(tmp_path):
    import zarr

    store = write_store(tmp_path / "s", "zarr")
    group = zarr.open_group(str(shard_at(store, "shard-n0w0-000000.zarr")), mode="r")
    ends = group["meta/episode_ends"][:]
    assert ends.tolist() == [4, 10]
    assert list(group["meta/episode_ids"][:]) == ["s0-e0000000", "s0-e0000001"]
    assert np.array_equal(group["data/wrist_rgb"][4:10], EPISODES[1][0]["wrist_rgb"])
    assert np.array_equal(group["data/action"][:4], EPISODES[0][0]["action"])
    assert group["data/head_rgb"].chunks == (1, 32, 32, 3)


def test_plain_tar_and_webdataset_read_a_shard(tmp_path):
    import webdataset as wds

    store = write_store(tmp_path / "s", "webdataset")
    shard = shard_at(store, "shard-n0w0-000000.tar")
    listing = subprocess.run(["tar", "tf", str(shard)], capture_output=True, text=True, check=True).stdout.split()
    members = ("head_rgb.png", "wrist_rgb.png", "state.npy", "action.npy", "object_pose.npy")
    members += ("cameras.json", "wrist_depth.png", "flags.json")
    # Format version 2: every sample has the same members (no episode.json at k = 0), as HF datasets requires.
    assert listing == [f"{key}.{m}" for key in [f"s0-e0000000_{k:06d}" for k in range(4)] + [
        f"s0-e0000001_{k:06d}" for k in range(6)
    ] for m in members]
    samples = list(wds.WebDataset(str(shard), shardshuffle=False).decode("rgb8"))
    assert [s["__key__"] for s in samples] == [f"s0-e0000000_{k:06d}" for k in range(4)] + [
        f"s0-e0000001_{k:06d}" for k in range(6)
    ]
    arrays = EPISODES[1][0]
    s = samples[4 + 2]
    assert np.array_equal(s["wrist_rgb.png"], arrays["wrist_rgb"][2])
    assert np.array_equal(s["state.npy"], arrays["state"][2])
    assert np.array_equal(s["object_pose.npy"], arrays["object_pose"][2])
    cameras = s["cameras.json"]  # nested lists; float32 values exactly
    assert np.array_equal(np.float32(cameras["wrist_pose"]), arrays["wrist_pose"][2])
    assert np.array_equal(np.float32(cameras["head_intrinsics"]), arrays["head_intrinsics"][2])
    from PIL import Image

    raw = list(wds.WebDataset(str(shard), shardshuffle=False))[4 + 2]  # undecoded: the depth PNG is 16-bit greyscale
    depth = np.asarray(Image.open(io.BytesIO(raw["wrist_depth.png"])))
    assert depth.dtype == np.uint16 and np.array_equal(depth, arrays["wrist_depth"][2])
    assert s["flags.json"] == {
        "is_first": False, "is_last": False, "is_terminal": False, "object_valid": [True, True, False], "object_contact": False,
    }  # fmt: skip
    from f1.datasets.manifest import read_manifest

    entry = read_manifest(store)["shards"][0]
    assert entry["episodes"][1]["randomization"] == {"light": 0.25, "objects": [1, 2]}  # the meta moved here


def test_version_1_webdataset_store_still_reads(tmp_path):
    """A version-1 store (episode.json at each episode's k = 0, no randomization in the manifest) reads and verifies."""
    store = write_store(tmp_path / "s", "webdataset")
    make_legacy(store, version=1)
    manifest = json.loads((store / MANIFEST_NAME).read_text())
    entry = manifest["shards"][0]
    metas = {e["id"]: e for e in entry["episodes"]}
    shard = store / entry["name"]
    old = tmp_path / "v1.tar"
    with tarfile.open(shard) as src, tarfile.open(old, "w", format=tarfile.GNU_FORMAT) as dst:
        for info in src:
            dst.addfile(info, src.extractfile(info))
            key, _, member = info.name.partition(".")
            episode_id, k = key.rsplit("_", 1)
            if member == "flags.json" and int(k) == 0:
                e = metas[episode_id]
                meta = {"episode_id": episode_id, "seed": e["seed"], "scene_id": e["scene_id"],
                        "randomization": e["randomization"], "length": e["length"]}  # fmt: skip
                data = json.dumps(meta).encode()
                extra = tarfile.TarInfo(f"{key}.episode.json")
                extra.size = len(data)
                dst.addfile(extra, io.BytesIO(data))
    old.replace(shard)
    (store / (entry["name"] + ".idx.npy")).unlink()  # the reader rebuilds the index from the tar headers
    for e in entry["episodes"]:
        del e["randomization"]
    entry["bytes"], entry["checksum"] = shard.stat().st_size, shard_checksum(shard)
    manifest["format_version"] = 1
    (store / MANIFEST_NAME).write_text(json.dumps(manifest))

    reader = open_store(store)
    assert reader.episode_meta(reader.episodes[1]).randomization == {"light": 0.25, "objects": [1, 2]}
    assert np.array_equal(reader.read_episode(reader.episodes[1])["wrist_rgb"], EPISODES[1][0]["wrist_rgb"])
    assert verify_store(store) == []


# -- stats --------------------------------------------------------------------------------------


def test_stats_numbers_on_a_known_store(tmp_path, capsys):
    episodes = []
    for i, n in enumerate([3, 5, 5]):
        arrays, meta = make_episode(i, n)
        for c, key in enumerate(SPEC.image_keys):
            arrays[key][:] = (51 * (c + 1), 102, 0)  # channel means known exactly, std 0
        arrays["object_pose"][:] = arrays["object_pose"][:1]  # objects at rest ...
        arrays["state"][:, 8:11] = [0.51 + 0.05 * i, 0.01, 0.01]  # the end effector still, in one 5 cm voxel per episode
        episodes.append((arrays, meta))
    # ... except in episode 1: slot 0 pushed 3 cm at its last step, slot 1 nudged 1 cm (not "moved").
    episodes[1][0]["object_pose"][-1, 0, 0] += 0.03
    episodes[1][0]["object_pose"][2:, 1, 1] += 0.01
    episodes[2][0]["state"][3:, 8] += 0.1  # episode 2 visits a second voxel
    store = write_store(tmp_path / "s", "zarr", episodes=episodes, per_shard=2)
    stats = compute_stats(open_store(store), sample_images=4, seed=0)
    assert (stats["episodes"], stats["steps"], stats["shards"]) == (3, 13, 2)
    assert stats["episode_length"]["histogram"] == [{"lo": 3, "hi": 3, "count": 1}, {"lo": 5, "hi": 5, "count": 2}]
    states = np.concatenate([a["state"][:, :11] for a, _ in episodes]).astype(np.float64)
    actions = np.concatenate([a["action"][:-1, :8] for a, _ in episodes]).astype(np.float64)  # last action is padding
    np.testing.assert_allclose(stats["state"]["mean"], states.mean(0), rtol=1e-9)
    np.testing.assert_allclose(stats["state"]["std"], states.std(0), rtol=1e-9)
    np.testing.assert_allclose(stats["action"]["min"], actions.min(0))
    np.testing.assert_allclose(stats["action"]["q99"], np.quantile(actions, 0.99, axis=0))
    assert len(stats["action"]["mean"]) == 8 and len(stats["state"]["mean"]) == 11
    assert stats["images"]["frames_sampled"] == 4
    np.testing.assert_allclose(stats["images"]["head_rgb"]["mean"], [0.2, 0.4, 0.0], atol=1e-12)
    np.testing.assert_allclose(stats["images"]["wrist_rgb"]["mean"], [0.4, 0.4, 0.0], atol=1e-12)
    np.testing.assert_allclose(stats["images"]["wrist_rgb"]["std"], 0.0, atol=1e-6)
    assert stats["bytes"] == sum(s["bytes"] for s in open_store(store).shards)
    assert stats["compression_ratio"] == pytest.approx(13 * SPEC.raw_bytes_per_step() / stats["bytes"])
    # Contacts (make_episode): episode i touches at acted steps k with k % 2 == i % 2: 1 of 2, 2 of 4, 2 of 4.
    e = stats["exploration"]
    assert e["object_contact_fraction"] == pytest.approx(5 / 10) and e["episodes_with_contact"] == 1.0
    assert e["objects_moved"] == pytest.approx(1 / 3) and e["objects_on_table"] == pytest.approx((1 + 2 + 3) / 3)
    assert e["ee_voxels"] == pytest.approx(4 / 3) and e["union_voxels"] == 4  # voxels x = 10, 11, 12 (+ 14 in episode 2)

    stats_main(store, as_json=True, sample_images=4)
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == 13 and printed["normalizer"] == str(store / NORMALIZER_FILE)
    normalizers = load_normalizers(store / NORMALIZER_FILE)
    assert normalizers["action"].real_dims == 8 and normalizers["state"].real_dims == 11
    np.testing.assert_allclose(normalizers["action"].mean, actions.mean(0), rtol=1e-9)


# -- bad input through the CLI ---------------------------------------------------------------------


def _one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_bad_input_is_one_line(tmp_path, f1_cli):
    (tmp_path / "notastore").mkdir()
    _one_line_error(f1_cli("dataset", "stats", tmp_path / "notastore"), "not an f1 store", "manifest.json")
    store = write_store(tmp_path / "s", "webdataset", episodes=EPISODES[:2])
    manifest = json.loads((store / MANIFEST_NAME).read_text())
    (store / MANIFEST_NAME).write_text(json.dumps({**manifest, "format_version": 99}))
    _one_line_error(f1_cli("dataset", "verify", store), "format version 99", "upgrade f1")
    (store / MANIFEST_NAME).write_text(json.dumps(manifest))
    _one_line_error(f1_cli("dataset", "show", store, "--episode", "nope"), "no episode 'nope'")
    _one_line_error(f1_cli("dataset", "convert", store, tmp_path / "c", "--format", "zarr", "--image-codec", "png"), "png")
    assert not (tmp_path / "c").exists()
    (shard_at(store, "shard-n0w0-000000.tar")).unlink()
    _one_line_error(f1_cli("dataset", "show", store, "--episode", "0", "--out", tmp_path / "x.png"), "missing")


def test_cli_verify_and_show(tmp_path, f1_cli):
    store = write_store(tmp_path / "s", "zarr", episodes=EPISODES[:2])
    result = f1_cli("dataset", "verify", store)
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr
    for out in (tmp_path / "e.mp4", tmp_path / "e.png"):
        result = f1_cli("dataset", "show", store, "--episode", "1", "--out", out)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(out) and out.stat().st_size > 1000
    from PIL import Image

    sheet = np.asarray(Image.open(tmp_path / "e.png"))
    assert sheet.shape == (128, 6 * 256, 3)  # 6 steps in one row, each head | wrist at 4x
