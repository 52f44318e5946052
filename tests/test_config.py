"""Config files, validation and the command line's precedence: defaults < --config < options."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from helpers import TINY, invoke, train_args, write_config, write_images

from wgan.config import ConfigError, WGANConfig, file_values, resolve_config


def test_defaults_are_the_seed_configuration() -> None:
    c = WGANConfig().validate()
    assert (c.batch_size, c.epochs, c.lr_critic, c.lr_generator, c.n_critic, c.clip_threshold, c.z_dim) == (
        512,
        12000,
        5e-5,
        5e-5,
        5,
        0.01,
        100,
    )
    assert c.critic_filters == (32, 64, 128, 128) and c.generator_filters == (128, 64, 32, 3)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_file_round_trip(tmp_path: Path, suffix: str) -> None:
    raw = {**TINY, "lr_critic": 1e-4, "notes": "hello"}
    path = tmp_path / f"c{suffix}"
    path.write_text(json.dumps(raw) if suffix == ".json" else yaml.safe_dump(raw))
    c = WGANConfig.from_file(path).validate()
    assert c.lr_critic == 1e-4 and c.notes == "hello" and c.critic_filters == (8, 16, 16)
    (tmp_path / "saved.json").write_text(json.dumps(c.to_dict()))
    assert WGANConfig.from_file(tmp_path / "saved.json") == c


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"lr_critc": 1}', "unknown config field"),
        ('{"batch_size": "many"}', "batch_size has the wrong type"),
        ("[1, 2]", "must hold a mapping"),
        ("{not json", "not valid"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        WGANConfig.from_file(path)


@pytest.mark.parametrize(
    "field, value",
    [
        ("batch_size", 0),
        ("clip_threshold", 0.0),
        ("n_critic", 0),
        ("epochs", 0),
        ("lr_critic", 0.0),
        ("lr_generator", -1e-5),
        ("clip_threshold", float("nan")),
    ],
)
def test_validate_names_the_bad_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        dataclasses.replace(WGANConfig(), **{field: value}).validate()


def test_precedence_defaults_then_file_then_cli() -> None:
    file_values = {"lr_critic": 1e-4, "batch_size": 16}
    c = resolve_config(file_values, {"batch_size": 32, "critic_filters": "8,8,8,8"})
    assert c.lr_critic == 1e-4  # from the file
    assert c.batch_size == 32  # the command line wins over the file
    assert c.critic_filters == (8, 8, 8, 8)  # comma lists parsed
    assert c.lr_generator == WGANConfig().lr_generator  # default


def test_resume_refuses_a_changed_hyper_parameter_but_takes_execution_options() -> None:
    run = WGANConfig(epochs=10)
    assert resolve_config({}, {"epochs": 20, "fused": True, "log_every": 3}, resumed=run).epochs == 20
    assert resolve_config({}, {"lr_critic": run.lr_critic}, resumed=run) == run  # same value is fine
    with pytest.raises(ConfigError, match="--lr-critic is a hyper-parameter"):
        resolve_config({}, {"lr_critic": 1e-3}, resumed=run)
    with pytest.raises(ConfigError, match="--critic-filters"):
        resolve_config({"critic_filters": [1, 2, 3, 4]}, {}, resumed=run)


def test_cli_writes_the_layered_config(tmp_path: Path) -> None:
    data = write_images(tmp_path / "imgs", n=12)
    cfg = write_config(tmp_path / "c.yaml", lr_critic=2e-4, seed=7, n_critic=3)
    cfg.write_text(yaml.safe_dump(json.loads(cfg.read_text())))
    out = tmp_path / "run"
    result = invoke(train_args(cfg, data, out, epochs="1", n_critic="2"))
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert saved == WGANConfig.from_dict(saved).to_dict()  # exactly WGANConfig.to_dict()
    assert saved["lr_critic"] == 2e-4 and saved["seed"] == 7  # file
    assert saved["n_critic"] == 2 and saved["epochs"] == 1  # command line over file
    assert saved["clip_threshold"] == 0.01  # default
    assert saved["data"] == str(data.resolve())


def test_help_lists_every_field_with_its_seed_default() -> None:
    result = invoke(["--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for f in dataclasses.fields(WGANConfig):
        if f.name != "extra":
            assert "--" + f.name.replace("_", "-") in text, f.name
    for shown in (
        "--critic-filters TEXT",
        "32,64,128,128",
        "--fused / --no-fused",
        "--resize / --no-resize",
        "default: 5e-05",
        "default: 512",
        "--resume RUN_DIR",
        "--config FILE",
        "[default: 0.01]",
    ):
        assert shown in text, shown


def test_every_field_carries_its_rules_and_the_cli_reads_them() -> None:
    """Help, choices and bounds live in the field's metadata; the CLI shows the same help."""
    from wgan.train import cli

    options = {p.name: p for p in cli.params}
    for f in dataclasses.fields(WGANConfig):
        if f.name == "extra":
            continue
        assert f.metadata["help"], f.name
        assert options[f.name].help == f.metadata["help"], f.name
        if f.metadata.get("choices"):
            assert list(options[f.name].type.choices) == list(f.metadata["choices"]), f.name


@pytest.mark.parametrize(
    "name",
    [
        f.name
        for f in dataclasses.fields(WGANConfig)
        if any(f.metadata.get(k) is not None for k in ("minimum", "maximum", "above", "below", "choices"))
    ],
)
def test_every_bound_in_the_metadata_is_enforced(name: str) -> None:
    meta = next(f for f in dataclasses.fields(WGANConfig) if f.name == name).metadata
    if meta.get("choices"):
        bad = "not-a-choice"
    else:
        edge = [meta[k] for k in ("minimum", "above") if meta.get(k) is not None]
        bad = (edge[0] - 1) if edge else (meta.get("maximum") or meta.get("below")) + 1
        bad = int(bad) if isinstance(getattr(WGANConfig(), name), int) else float(bad)
    with pytest.raises(ConfigError, match=name):
        dataclasses.replace(WGANConfig(), **{name: bad}).validate()


PRESETS = Path(__file__).resolve().parents[1] / "configs"


def test_every_preset_is_a_valid_config() -> None:
    """configs/*.yaml load through the same layering as ``--config`` and say what they claim."""
    presets = {path.stem: resolve_config(file_values(path), {}) for path in sorted(PRESETS.glob("*.yaml"))}
    assert {"seed", "cpu_look", "book"} <= set(presets)
    seed, look, book = presets["seed"], presets["cpu_look"], presets["book"]
    assert (seed.epochs, seed.batch_size, seed.recipe, seed.fused) == (12000, 512, "wgan", True)
    assert dataclasses.replace(seed, fused=False) == WGANConfig()  # the seed run is the defaults, fused
    assert (look.epochs, look.batch_size) == (300, 64)
    assert (book.recipe, book.rmsprop_alpha, book.rmsprop_eps) == ("book", 0.9, 1e-7)  # the recipe's optimizer


def test_a_preset_is_overridden_by_the_command_line() -> None:
    config = resolve_config(file_values(PRESETS / "book.yaml"), {"epochs": 7})
    assert config.epochs == 7 and config.recipe == "book"
