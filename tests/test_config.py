"""Config: defaults, overrides, and errors that name the key path and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgelearn.commands.demo import FEDAVG_DIGITS, HIERFAVG_DIGITS
from edgelearn.config import apply_overrides, read_yaml
from edgelearn.errors import ConfigError
from edgelearn.run_config import RunConfig, build_config, dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_fedavg_on_digits() -> None:
    cfg = RunConfig()
    assert cfg.algorithm.name == "fedavg"
    assert cfg.data.dataset == "digits"
    assert cfg.topology.devices == 100
    assert cfg.partition.method == "dirichlet" and cfg.partition.alpha == 0.5


def test_overrides_parse_yaml_values_and_create_sections() -> None:
    out = apply_overrides({"a": {"b": 1}}, ["a.b=2.5", "a.c=[1, 2]", "d.e=true", "f=none"])
    assert out == {"a": {"b": 2.5, "c": [1, 2]}, "d": {"e": True}, "f": "none"}


def test_override_into_a_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match="`a.b` is a value"):
        apply_overrides({"a": {"b": 1}}, ["a.b.c=2"])
    with pytest.raises(ConfigError, match="no '='"):
        apply_overrides({}, ["a.b"])


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"bogus": 1}, "`bogus` is not a known key; allowed here: algorithm, channel"),
        ({"partition": {"alpah": 1}}, "`partition.alpah` is not a known key; allowed here: alpha, method"),
        ({"algorithm": {"name": "sgd"}}, "`algorithm.name` is 'sgd'; allowed: fedavg, hierfavg"),
        (
            {"algorithm": {"local": {"lr": -1}}},
            "`algorithm.local.lr`: Input should be greater than 0 (got -1)",
        ),
        (
            {"algorithm": {"name": "hierfavg", "kappa3": 1}},
            "`algorithm.kappa3` is not a known key; allowed here: kappa1",
        ),
        (
            {"hardware": {"device": {"f_max_hz": 0}}},
            "`hardware.device.f_max_hz`: Input should be greater than 0",
        ),
        ({"topology": {"devices": 5, "edges": 2}}, "give exactly one of"),
        ({"topology": {"devices": None, "edges": 2}}, "`edges` needs `devices_per_edge`"),
        (
            {"topology": {"devices": None, "edges": 2, "devices_per_edge": [3]}},
            "lists 1 counts but `edges` is 2",
        ),
        ({"seed": -3}, "`seed`: Input should be greater than or equal to 0"),
    ],
)
def test_errors_name_the_key(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(data)
    assert fragment in str(info.value)


def test_overrides_switch_algorithm_and_topology() -> None:
    cfg = build_config(
        {},
        [
            "algorithm.name=hierfavg",
            "topology.devices=null",
            "topology.edges=3",
            "topology.devices_per_edge=4",
        ],
    )
    assert cfg.algorithm.name == "hierfavg"
    assert cfg.algorithm.local.steps == cfg.algorithm.kappa1
    assert cfg.topology.edges == 3


def test_hardware_range_override() -> None:
    cfg = build_config({}, ["hardware.device.f_max_hz=[5e8, 1e9]"])
    assert cfg.hardware.device.f_max_hz == (5e8, 1e9)
    assert cfg.hardware.edge.f_max_hz == 5e9  # other tiers keep their own defaults


def test_dump_roundtrip(tmp_path: Path) -> None:
    cfg = build_config({}, ["algorithm.rounds=7", "hardware.device.f_max_hz=[5e8, 1e9]"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        read_yaml(lst)


def test_shipped_configs_match_the_demo() -> None:
    assert load_config(ROOT / "configs/fedavg-digits.yaml") == build_config(FEDAVG_DIGITS)
    assert load_config(ROOT / "configs/hierfavg-digits.yaml") == build_config(HIERFAVG_DIGITS)
    load_config(ROOT / "configs/fedavg-fashion.yaml")


def test_fedagg_config_matches_the_demo() -> None:
    from edgelearn.commands.demo import FEDAGG_DIGITS

    assert load_config(ROOT / "configs/fedagg/digits.yaml") == build_config(FEDAGG_DIGITS)


def test_two_stage_config_matches_the_demo() -> None:
    from edgelearn.commands.demo import TWO_STAGE_DIGITS

    assert load_config(ROOT / "configs/two_stage/digits.yaml") == build_config(TWO_STAGE_DIGITS)


def test_switching_algorithm_keeps_only_known_keys() -> None:
    path = ROOT / "configs/fedagg/digits.yaml"
    for name in ("fedagg", "hierfavg", "fedgkt", "feddkc", "demlearn", "fedavg"):
        cfg = load_config(path, [f"algorithm.name={name}"])
        assert cfg.algorithm.name == name
        assert cfg.algorithm.rounds == load_config(path).algorithm.rounds  # shared keys survive
    with pytest.raises(ConfigError, match="allowed: fedavg, hierfavg, two_stage, fedagg"):
        load_config(path, ["algorithm.name=nope"])


def test_one_local_section_survives_an_algorithm_switch() -> None:
    """Every SGD-trained algorithm reads lr, batch size and momentum from `local:` (issue 15 item 3), so
    `--set algorithm.name=hierfavg` on FedAgg's file trains at the file's lr 1e-3, not HierFAVG's 0.05."""
    path = ROOT / "configs/fedagg/digits.yaml"
    for name in ("fedagg", "hierfavg", "fedavg", "fedgkt", "feddkc", "demlearn"):
        local = load_config(path, [f"algorithm.name={name}"]).algorithm.local
        assert (local.lr, local.batch_size) == (0.001, 8), name
    two_stage = load_config(ROOT / "configs/two_stage/digits.yaml")
    assert two_stage.algorithm.local.lr == 0.05
    with pytest.raises(ConfigError, match="not a known key; allowed here: lr"):  # batches come from the plan
        load_config(ROOT / "configs/two_stage/digits.yaml", ["algorithm.local.batch_size=8"])
    moved = [
        ("fedagg", "lr", "algorithm.local.lr"),
        ("fedgkt", "client_epochs", "algorithm.local.epochs"),
        ("demlearn", "local_epochs", "algorithm.local.epochs"),
        ("feddkc", "momentum", "algorithm.local.momentum"),
        ("two_stage", "eta_ft", "algorithm.local.lr"),
    ]
    for name, old, new in moved:  # an old key names its new place instead of being ignored
        with pytest.raises(ConfigError, match=rf"`algorithm.{old}` has moved: write `{new}`"):
            build_config({"algorithm": {"name": name, old: 1}})
