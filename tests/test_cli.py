import pytest
from typer.main import get_command

from f1 import __version__
from f1.cli import app

COMMAND = get_command(app)


def _parse(*path_and_args: str) -> dict:
    """Parse arguments for a leaf command without running it."""
    node = COMMAND
    args = list(path_and_args)
    while hasattr(node, "commands") and args and args[0] in node.commands:
        node = node.commands[args.pop(0)]
    return node.make_context(node.name, args).params


def test_version(f1_cli):
    result = f1_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"f1 {__version__}"


@pytest.mark.parametrize("group", [[], ["collect"], ["dataset"], ["train"], ["evaluate"], ["train", "teacher"]])
def test_help_on_each_group(f1_cli, group):
    result = f1_cli(*group, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


@pytest.mark.parametrize(
    "argv, key, value",
    [
        (["train", "teacher", "--data", "d", "--num_episodes", "3"], "num_episodes", 3),
        (["train", "teacher", "--data", "d", "--num-episodes", "3"], "num_episodes", 3),
        (["train", "teacher", "--data", "d", "--auto_resume"], "auto_resume", True),
        (["train", "teacher", "--data", "d", "--max_steps", "9"], "max_steps", 9),
        (["train", "teacher", "--data", "d", "--output_dir", "o"], "output_dir", "o"),
        (["train", "student", "--teacher_path", "t"], "teacher_path", "t"),
        (["train", "student", "--teacher-path", "t"], "teacher_path", "t"),
        (["train", "student", "--steps_per_episode", "7"], "steps_per_episode", 7),
        (["train", "adversarial", "--teacher_checkpoint", "t"], "teacher_checkpoint", "t"),
        (["train", "adversarial", "--student_checkpoint", "s"], "student_checkpoint", "s"),
        (["train", "adversarial", "--total_iterations", "2"], "total_iterations", 2),
        (["collect", "--out", "o", "--episodes_per_shard", "2"], "episodes_per_shard", 2),
        (["collect", "--out", "o", "--num_episodes", "5"], "episodes", 5),
        (["collect", "--out", "o", "--steps-per-episode", "5"], "steps_per_episode", 5),
        (["evaluate", "--checkpoint", "c", "--num_episodes", "2"], "episodes", 2),
    ],
)
def test_dash_flags_and_seed_underscore_aliases(argv, key, value):
    params = _parse(*argv)
    assert str(params[key]) == str(value)


def test_bad_config_override_is_one_line_exit_2(f1_cli, tmp_path):
    result = f1_cli("collect", "--out", tmp_path / "s", "--set", "training.bptt_lenght=4")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown config key 'training.bptt_lenght'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "s").exists()


def test_missing_config_file_is_one_line_exit_2(f1_cli, tmp_path):
    result = f1_cli("train", "tokenizer", "--data", tmp_path, "--config", tmp_path / "missing.yaml")
    assert result.returncode == 2
    assert "missing.yaml does not exist" in result.stderr and "Traceback" not in result.stderr
