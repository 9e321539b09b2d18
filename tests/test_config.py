import pytest

from f1.shared.config import ConfigError, F1Config, config_from_dict, load_config, parse_override


def test_packaged_config_loads_with_tiny_preset():
    cfg = load_config()
    assert cfg.model.preset == "tiny"
    assert cfg.model.hidden_size == 64  # from preset_tiny.yaml
    assert cfg.training.bptt_length == 8
    assert cfg.model.lora.target_modules == ["q_proj", "v_proj"]


def test_defaults_mirror_rl_config_yaml():
    # The dataclass defaults and the packaged YAML say the same thing, so a user
    # reading either sees the truth.
    import yaml

    from f1.shared.config import default_config_path

    file_values = yaml.safe_load(default_config_path().read_text())
    defaults = F1Config().to_dict()

    def walk(values, expected, prefix=""):
        for key, value in values.items():
            if isinstance(value, dict):
                walk(value, expected[key], f"{prefix}{key}.")
            else:
                assert expected[key] == value, f"{prefix}{key}: default {expected[key]!r} vs yaml {value!r}"

    walk(file_values, defaults)


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.bptt_lenght=4", "unknown config key 'training.bptt_lenght'"),
        ("training.bptt_length=four", "'training.bptt_length' must be an integer"),
        ("training.bptt_length=0", "'training.bptt_length' must be >= 1"),
        ("training.memory_backprop=3", "'training.memory_backprop' must be true or false"),
        ("collect.format=parquet", "'collect.format' must be one of"),
        ("nosection.x=1", "unknown config key 'nosection'"),
        ("model.lora.target_modules=q_proj", "must be a list"),
        ("student.gamma=1.5", "'student.gamma' must be <= 1"),
        ("model.preset=huge", "unknown preset 'huge'"),
        ("model.num_heads=5", "divisible by model.num_heads=5"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_misspelt_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match="did you mean 'training.bptt_length'"):
        load_config(overrides=["training.bptt_lenght=4"])


def test_precedence_preset_file_set_flags(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("model:\n  preset: base\n  num_layers: 3\ntraining:\n  batch_size: 2\n")
    cfg = load_config(path, overrides=["training.batch_size=5"], flags={"training.batch_size": 7, "training.seed": None})
    assert cfg.model.hidden_size == 512  # from the base preset
    assert cfg.model.num_layers == 3  # the file wins over the preset
    assert cfg.training.batch_size == 7  # flags win over --set
    assert cfg.training.seed == 0  # a flag not given (None) changes nothing


def test_set_parses_yaml_values():
    assert parse_override("model.lora.target_modules=[q_proj,k_proj]") == (
        ["model", "lora", "target_modules"],
        ["q_proj", "k_proj"],
    )
    cfg = load_config(overrides=["training.learning_rate=1e-3", "training.num_episodes=null", "training.max_steps=5"])
    assert cfg.training.learning_rate == pytest.approx(1e-3)
    assert cfg.training.num_episodes is None and cfg.training.max_steps == 5


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_config_round_trips_through_dict():
    cfg = load_config(overrides=["training.bptt_length=3"])
    again = config_from_dict(cfg.to_dict())
    assert again == cfg


# The seed's spellings (F1-VLA's rl_config.yaml) that f1 names otherwise, nests otherwise or has no use for.
SEED_SPELLINGS = """
logging:
  file_level: "CRITICAL"
model:
  config_file: /somewhere/f1_vla/config/debug_test.yaml
  lora:
    lora_alpha: 32
training:
  learning_rate: 1e-4
  video_save_every: 3
  sample_save_every: 3
environment:
  embodiment: ["franka-panda"]
student:
  rewards:
    memory_divergence_weight: 0.5
    wm_uncertainty_weight: 0.25
"""


def test_seed_config_spellings_load(tmp_path, f1_cli):
    path = tmp_path / "rl_config.yaml"
    path.write_text(SEED_SPELLINGS)
    cfg = load_config(path)
    assert cfg.logging.file_level == "CRITICAL"
    assert cfg.model.lora.alpha == 32
    assert cfg.training.learning_rate == 1e-4 and isinstance(cfg.training.learning_rate, float)
    assert cfg.training.sample_every == 3
    assert cfg.environment.embodiment == "panda"
    assert (cfg.student.memory_divergence_weight, cfg.student.wm_uncertainty_weight) == (0.5, 0.25)

    # Through the CLI: the file is accepted (the command goes on to the missing store), one warning line.
    result = f1_cli("train", "tokenizer", "--data", tmp_path / "no-store", "--config", path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in result.stderr, lines
    assert lines[0].startswith("warning: config key 'model.config_file' is ignored: an F1-VLA model file")
    assert lines[1].startswith("error:") and "no-store" in lines[1] and "config key" not in lines[1]

    # A typo in one of f1's own keys in the same file is still an error with a suggestion.
    path.write_text(SEED_SPELLINGS + "  learning_rat: 1e-4\n")
    result = f1_cli("train", "tokenizer", "--data", tmp_path / "no-store", "--config", path)
    assert result.returncode == 2
    assert "unknown config key 'student.learning_rat'" in result.stderr and "did you mean 'student.learning_rate'" in result.stderr
