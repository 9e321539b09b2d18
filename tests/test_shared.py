import importlib.util
import json
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from f1.shared.errors import UserError
from f1.shared.gpu import SEED_DEVICE_VARS, physical_gpu_ids, pin_from_local_rank, sapien_render_device, worker_env
from f1.shared.normalizers import Normalizer, load_normalizers, save_normalizers


# ---------------------------------------------------------------- GPU pinning


def test_worker_env_pins_each_rank_to_one_physical_gpu():
    environ = {"CUDA_VISIBLE_DEVICES": "2,5,7", "PATH": "/bin"}
    gpus = physical_gpu_ids(2, environ)
    assert gpus == ["2", "5"]
    for rank, expected in enumerate(gpus):
        env = worker_env(rank, gpus, environ)
        assert env["CUDA_VISIBLE_DEVICES"] == expected
        assert all(env[var] == expected for var in SEED_DEVICE_VARS)
        assert env["PATH"] == "/bin"
        assert sapien_render_device(env) == "cuda:0"


def test_worker_env_without_cuda_visible_devices_counts_from_zero():
    assert physical_gpu_ids(3, {}) == ["0", "1", "2"]


def test_cpu_worker_hides_cuda():
    env = worker_env(0, [], {"CUDA_VISIBLE_DEVICES": "0", "VK_DEVICE_INDEX": "0"})
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert "VK_DEVICE_INDEX" not in env
    assert sapien_render_device(env) is None


def test_too_many_gpus_is_a_user_error():
    with pytest.raises(UserError, match="exposes 1"):
        physical_gpu_ids(2, {"CUDA_VISIBLE_DEVICES": "3"})


@pytest.mark.parametrize("local_rank, expected", [("0", "4"), ("1", "6")])
def test_pin_from_local_rank(local_rank, expected):
    environ = {"CUDA_VISIBLE_DEVICES": "4,6", "LOCAL_RANK": local_rank}
    assert pin_from_local_rank(environ) == expected
    assert all(environ[var] == expected for var in SEED_DEVICE_VARS)
    assert environ["CUDA_VISIBLE_DEVICES"] == "4,6"  # accelerate picks cuda:LOCAL_RANK itself


def test_pin_from_local_rank_out_of_range_and_cpu():
    with pytest.raises(UserError, match="LOCAL_RANK=2"):
        pin_from_local_rank({"CUDA_VISIBLE_DEVICES": "0,1", "LOCAL_RANK": "2"})
    environ = {"CUDA_VISIBLE_DEVICES": "", "LOCAL_RANK": "0"}
    assert pin_from_local_rank(environ) is None
    assert not any(var in environ for var in SEED_DEVICE_VARS)


# ---------------------------------------------------------------- normalizers


def test_normalizer_round_trip_numpy_and_torch(tmp_path):
    rng = np.random.default_rng(0)
    samples = np.zeros((500, 32), np.float32)
    samples[:, :8] = rng.normal(3.0, 2.0, (500, 8))
    norm = Normalizer.fit(samples, real_dims=8)
    z = norm.normalize(samples)
    assert np.allclose(z[:, :8].mean(0), 0, atol=1e-5) and np.allclose(z[:, :8].std(0), 1, atol=1e-4)
    assert np.all(z[:, 8:] == 0)  # padding untouched
    assert np.allclose(norm.unnormalize(z), samples, atol=1e-5)

    save_normalizers(tmp_path / "normalizer.json", {"action": norm})
    loaded = load_normalizers(tmp_path / "normalizer.json")["action"]
    assert loaded == norm
    t = torch.from_numpy(samples)
    assert torch.allclose(loaded.unnormalize(loaded.normalize(t)), t, atol=1e-5)
    assert json.loads((tmp_path / "normalizer.json").read_text())["action"]["real_dims"] == 8


def test_normalizer_from_stats_guards_zero_std():
    norm = Normalizer.from_stats({"mean": [1.0, 2.0], "std": [0.0, 2.0]})
    x = np.array([[1.0, 4.0, 9.0]], np.float32)
    assert np.allclose(norm.normalize(x), [[0.0, 1.0, 9.0]])


# ---------------------------------------------------------------- packaging


def test_f1_packages_import_and_hf_datasets_is_not_shadowed(tmp_path):
    # In a fresh interpreter outside the repo: f1.datasets is ours, `datasets` is not.
    code = (
        "import importlib.util, f1.datasets, f1.shared, f1.collect, f1.train; "
        "spec = importlib.util.find_spec('datasets'); "
        "print(f1.datasets.__file__); print(spec.origin if spec else None)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    ours, theirs = out.stdout.split()
    assert Path(ours).parent.name == "datasets"
    # Either Hugging Face datasets is absent, or it is a different (the real) package.
    assert theirs == "None" or Path(theirs).parent != Path(ours).parent


def test_nothing_generic_lands_at_the_top_of_site_packages():
    for root in site.getsitepackages():
        for name in ("datasets", "shared", "train", "collect"):
            path = Path(root) / name
            # a `datasets` there may be Hugging Face's (a test dependency), never ours
            theirs = name == "datasets" and (path / "arrow_dataset.py").exists()
            assert not (path / "__init__.py").exists() or theirs, path
