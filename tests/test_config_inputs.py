"""Bad config inputs that used to slip through: keys dropped on an algorithm switch, booleans taken as
numbers, duplicate YAML keys and alias bombs. Each must be a ConfigError naming the key (or line)."""

from __future__ import annotations

import logging
import resource
import time
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from edgelearn.commands.sweep.spec import load_suite
from edgelearn.commands.sweep.suite import check_suite
from edgelearn.config import parse_override, read_yaml
from edgelearn.errors import ConfigError
from edgelearn.run_config import RunConfig, build_config, dump_config, load_config
from edgelearn.yamlsafe import load_yaml

ROOT = Path(__file__).resolve().parents[1]
FEDAVG = ROOT / "configs/fedavg-digits.yaml"


# ------------------------------------------------------------------------------ 1. switching algorithms
def test_switch_rejects_a_key_no_algorithm_knows() -> None:
    with pytest.raises(ConfigError, match=r"`algorithm.kappa_1` is not a known key; allowed here: kappa1"):
        load_config(FEDAVG, ["algorithm.name=hierfavg", "algorithm.kappa_1=5"])


def test_switch_rejects_an_explicit_key_the_new_algorithm_does_not_know() -> None:
    # beta is FedAgg's: dropping it would be fine if it came from the file, but the user asked for it
    for order in (
        ["algorithm.name=hierfavg", "algorithm.beta=3"],
        ["algorithm.beta=3", "algorithm.name=hierfavg"],
    ):
        with pytest.raises(ConfigError, match=r"`algorithm.beta` is not a known key; allowed here: kappa1"):
            load_config(FEDAVG, order)


def test_switch_drops_file_keys_another_algorithm_knows_and_logs_them(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("algorithm: {name: fedavg, clients_per_round: 10, local: {lr: 0.2, epochs: 3}}\n")
    with caplog.at_level(logging.INFO, logger="edgelearn.run_config"):
        cfg = load_config(path, ["algorithm.name=fedagg"])  # clients_per_round is FedAvg's alone
    assert cfg.algorithm.name == "fedagg"
    assert "ignoring keys only other algorithms use: ['clients_per_round']" in caplog.text
    assert (cfg.algorithm.local.lr, cfg.algorithm.local.epochs) == (0.2, 3)  # `local` means one thing


def test_switch_rejects_a_nested_typo_in_a_dropped_section(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("algorithm: {name: fedavg, local: {epochz: 2}}\n")
    with pytest.raises(ConfigError, match=r"`algorithm.local.epochz` is not a known key; allowed here: "):
        load_config(path, ["algorithm.name=fedagg"])
    path.write_text("algorithm: {name: fedavg, local: {epochs: 2}}\n")
    assert load_config(path, ["algorithm.name=fedagg"]).algorithm.name == "fedagg"


def test_same_name_override_is_not_a_switch(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("algorithm: {name: fedavg, kappa1: 3}\n")  # HierFAVG's key in a FedAvg section
    with pytest.raises(ConfigError, match="`algorithm.kappa1` is not a known key"):
        load_config(path, ["algorithm.name=fedavg"])


def test_sweep_check_fails_on_an_unknown_algorithm_key() -> None:
    for suite in ("configs/fedagg/experiments.yaml", "configs/two_stage/experiments.yaml"):
        with pytest.raises(ConfigError, match="`algorithm.betta` is not a known key"):
            check_suite(ROOT / suite, quick=True, extra=["algorithm.betta=1"])
        assert check_suite(ROOT / suite, quick=True) > 0  # the shipped suites stay valid


# ------------------------------------------------------------------------------ 2. booleans are not numbers
def _alternatives(annotation: Any) -> list[Any]:
    """The members of a (possibly Annotated / Optional) annotation, Annotated wrappers stripped."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _alternatives(a)]
    return [annotation]


def _is_number(annotation: Any) -> bool:
    return annotation in (int, float) or (
        typing.get_origin(annotation) is typing.Literal
        and all(type(x) is int for x in typing.get_args(annotation))
    )


def _numeric(annotation: Any) -> str | None:
    """``"scalar"`` when a field takes a number, ``"list"`` when only a list/tuple of numbers, else None."""
    members = _alternatives(annotation)
    if any(_is_number(m) for m in members):
        return "scalar"
    for m in members:
        args = typing.get_args(m)
        if (
            typing.get_origin(m) in (list, tuple)
            and args
            and any(_is_number(a) for a in _alternatives(args[0]))
        ):
            return "list"
    return None


def _sections(annotation: Any) -> list[type[BaseModel]]:
    """The section types behind an annotation (Optional and unions of sections unwrapped)."""
    return [m for m in _alternatives(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]


def numeric_fields(
    model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], str, str]]:
    """(key path, kind, algorithm name or "") of every int/float field of the schema, algorithms included."""
    out: list[tuple[tuple[str, ...], str, str]] = []
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        kind = _numeric(field.annotation)
        if kind is not None:
            out.append((path, kind, ""))
        members = [field.annotation, *typing.get_args(field.annotation)]
        for m in members:
            for inner in [m, *typing.get_args(m)]:
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    tag = inner.model_fields.get("name")
                    algo = tag.default if path == ("algorithm",) and tag is not None else ""
                    out += [(p, k, algo or a) for p, k, a in numeric_fields(inner, path)]
    return sorted(set(out))


NUMERIC_FIELDS = numeric_fields(RunConfig)


def test_the_walk_finds_numbers_everywhere() -> None:
    paths = {".".join(p) for p, _, _ in NUMERIC_FIELDS}
    for expected in (
        "seed",
        "algorithm.rounds",
        "algorithm.local.lr",
        "channel.bandwidth_hz",
        "data.input_shape",
        "algorithm.budget.energy_j",
        "algorithm.autoencoder.embed_channels",
        "eval.targets",
        "faults.edge_failures.start_round",
        "algorithm.joint_min_ft_rounds",
    ):
        assert expected in paths, expected
    assert len(NUMERIC_FIELDS) > 100


def _nest(path: tuple[str, ...], value: Any, model: type[BaseModel] | None = RunConfig) -> Any:
    """{path[0]: {path[1]: ... value}}; list-of-section fields (edge_failures, migrations) get a list."""
    head, rest = path[0], path[1:]
    if not rest:
        return {head: value}
    field = model.model_fields.get(head) if model is not None else None
    annotation = field.annotation if field is not None else None
    listed = typing.get_origin(annotation) is list
    candidates = _sections(typing.get_args(annotation)[0] if listed else annotation)
    sub = next((c for c in candidates if rest[0] in c.model_fields), None)
    nested = _nest(rest, value, sub)
    return {head: [nested] if listed else nested}


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.sampled_from(NUMERIC_FIELDS), st.booleans())
def test_no_int_or_float_field_takes_a_boolean(field: tuple[tuple[str, ...], str, str], flag: bool) -> None:
    path, kind, algo = field
    value: Any = flag if kind == "scalar" else [flag, 2]
    data = _nest(path, value)
    if algo:
        data["algorithm"]["name"] = algo
    dotted = (
        ".".join(path).replace("edge_failures.", "edge_failures[0].").replace("migrations.", "migrations[0].")
    )
    with pytest.raises(ConfigError) as info:
        build_config(data)
    assert f"`{dotted}`: a boolean is not a number" in info.value.message


def test_every_numeric_field_rejects_true_via_set() -> None:
    for path, kind, algo in NUMERIC_FIELDS:
        if "edge_failures" in path or "migrations" in path:
            continue  # list items: covered through the dict form above
        sets = [f"algorithm.name={algo}"] if algo else []
        sets.append(f"{'.'.join(path)}={'true' if kind == 'scalar' else '[true, 2]'}")
        with pytest.raises(ConfigError, match=f"`{'.'.join(path)}`: a boolean is not a number"):
            build_config({}, sets)


def test_numbers_stay_lax_where_they_should() -> None:
    cfg = load_config(FEDAVG, ["algorithm.rounds=5", "algorithm.local.lr=1", "channel.bandwidth_hz=1e6"])
    assert cfg.algorithm.rounds == 5 and cfg.algorithm.local.lr == 1.0 and cfg.channel.bandwidth_hz == 1e6
    cfg = load_config(FEDAVG, ["output.plots=false", "channel.include_downlink=true", "output.progress=true"])
    assert cfg.output.plots is False and cfg.output.progress is True
    assert build_config({"model": {"options": {"flag": True}}}).model.options == {"flag": True}


# ------------------------------------------------------------------------------ 3. duplicate YAML keys
def test_duplicate_key_names_the_key_and_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("seed: 0\nalgorithm:\n  name: fedavg\n  rounds: 5\n  rounds: 50\n")
    with pytest.raises(ConfigError, match=r"key `rounds` is given twice \(line 4 and line 5\)"):
        read_yaml(path)


@settings(max_examples=40, deadline=None, derandomize=True)
# keys start with "k" so none is a YAML 1.1 boolean or null word ("no", "on", "y", "null": those load as
# False / True / None, and "no" beside "off" would be the same key)
@given(
    st.lists(st.from_regex(r"k[a-z]{0,5}", fullmatch=True), min_size=1, max_size=5, unique=True), st.data()
)
def test_any_repeated_key_is_refused(keys: list[str], data: st.DataObject) -> None:
    again = data.draw(st.sampled_from(keys))
    lines = [f"{k}: 1" for k in keys] + [f"{again}: 2"]
    with pytest.raises(yaml.YAMLError, match=f"duplicate key '{again}' at line {len(lines)}"):
        load_yaml("\n".join(lines))
    assert load_yaml("\n".join(lines[:-1])) == dict.fromkeys(keys, 1)


def test_duplicate_keys_in_overrides_and_suites_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        parse_override("model.options={a: 1, a: 2}")
    suite = tmp_path / "suite.yaml"
    suite.write_text("suite: s\nsuite: t\nexperiments: []\n")
    with pytest.raises(ConfigError, match="duplicate key 'suite'"):
        load_suite(suite)


# ------------------------------------------------------------------------------ 4. alias bombs
BOMB = "\n".join(
    [
        "model:",
        "  name: mlp",
        "  options:",
        '    a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    ]
    + [f"    a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
)


def test_alias_bomb_fails_fast_without_memory(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)  # 9^10 ~ 3.5e9 strings once expanded
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(
        ConfigError, match=r"YAML aliases at line 9 expand to [\d,]+ values, more than the 100,000"
    ):
        load_config(path)
    assert time.perf_counter() - start < 0.5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: nothing was expanded
    with pytest.raises(ConfigError, match="expand to"):
        parse_override(
            "model.options=" + BOMB.split("options:")[1].replace("\n    ", ", ").strip(", ").join("{}")
        )
    suite = tmp_path / "suite.yaml"
    suite.write_text(BOMB.replace("model:", "suite: s\nexperiments: []\nx:"))
    with pytest.raises(ConfigError, match="expand to"):
        load_suite(suite)


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("model:\n  options: &a {self: *a}\n")
    with pytest.raises(ConfigError, match="refers to itself"):
        read_yaml(path)


def test_small_aliases_still_load_unshared(tmp_path: Path) -> None:
    # PyYAML's own dumper writes anchors for shared objects, so scripted configs may hold them
    shared = {"hidden": [32]}
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"options": shared},
                "algorithm": {"name": "fedagg", "models": {"device": {"name": "mlp", "options": shared}}},
            }
        )
    )
    assert "&id001" in path.read_text()
    cfg = load_config(path, ["model.options.hidden=[64]"])  # changes one place, not the alias's other one
    assert cfg.model.options == {"hidden": [64]} and cfg.algorithm.models.device.options == {"hidden": [32]}


def test_dumped_configs_hold_no_aliases_and_load_again() -> None:
    cfg = build_config({"algorithm": {"name": "fedagg"}})
    text = dump_config(cfg)
    assert "&" not in text and "*" not in text
    assert build_config(load_yaml(text)) == cfg


# ------------------------------------------------------------------------------ 5. sizes that cannot fit
def test_synthetic_sizes_beyond_memory_fail_fast_with_an_estimate() -> None:
    from edgelearn.memory import GIB, check_memory, data_bytes

    cfg = build_config({}, ["data.dataset=synthetic", "data.num_train=1000000000"])
    with pytest.raises(ConfigError, match=r"data.num_train=1000000000.*need about 5\d\d GiB.*only 4 GiB"):
        check_memory(cfg, available=4 * GIB)
    check_memory(build_config({}, ["data.dataset=synthetic"]), available=4 * GIB)  # the default fits
    check_memory(cfg.model_copy(update={"data": build_config({}).data}), available=1)  # digits: fixed size
    # per training sample: two float32 copies of the features, two labels, the generator's temporaries
    assert data_bytes(1, 0, (1, 8, 8)) == 2 * (4 * 64 + 8) + 16


# ------------------------------------------------------------------------------ 8. physics extremes
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("channel.bandwidth_hz=1e-300", "channel.bandwidth_hz (1e-300)"),
        ("channel.bandwidth_hz=1e300", "channel.bandwidth_hz (1e+300)"),
        ("hardware.device.p_max_w=1e-300", "hardware.device.p_max_w (1e-300)"),
        ("channel.noise_psd_dbm_per_hz=1e10", "channel.noise_psd_dbm_per_hz (1e+10)"),
        ("channel.path_loss_a_db=1e5", "channel.path_loss_a_db (1e+05)"),
        ("channel.distance_m=1e300", "channel.distance_m"),
        ("channel.backhaul_rate_bps=1e-300", "channel.backhaul_rate_bps (1e-300)"),
        ("hardware.edge.p_max_w=1e-300", "hardware.edge.p_max_w (1e-300)"),  # the downlink to devices
        ("hardware.device.f_max_hz=1e-300", "hardware.device.f_max_hz"),
        ("hardware.edge.f_max_hz=1e300", "hardware.edge.f_max_hz"),
        ("hardware.edge.kappa=1e300", "hardware.edge.kappa"),
        ("hardware.cloud.power_w=1e300", "hardware.cloud.power_w"),  # the cloud is an accelerator
        ("hardware.cloud.flops_per_s=1e-300", "hardware.cloud.flops_per_s"),
    ],
)
def test_absurd_physics_is_a_config_error_naming_the_key(override: str, key: str) -> None:
    import warnings

    from edgelearn.runner import build_system, build_topology
    from edgelearn.seeding import Seeds

    cfg = build_config({}, [override, "topology.edges=2", "topology.devices_per_edge=2"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning on the way
        with pytest.raises(ConfigError) as info:
            build_system(cfg, build_topology(cfg), Seeds(0))
    assert key in str(info.value)
    build_system(build_config({}), build_topology(build_config({})), Seeds(0))  # the defaults are fine


# ------------------------------------------------------------------------------ 9. autoencoder files
def test_autoencoder_file_metadata_must_match_the_config() -> None:
    from edgelearn.algorithms.fedagg.config import AutoencoderConfig
    from edgelearn.algorithms.fedagg.pretrain import check_autoencoder_meta
    from edgelearn.models.autoencoder import ARCHITECTURE

    ac = AutoencoderConfig(path="ae.pt", embed_channels=8)
    meta = {"architecture": ARCHITECTURE, "input_shape": [1, 8, 8], "embed_channels": 4}
    with pytest.raises(
        ConfigError, match=r"embed_channels=4 but algorithm.autoencoder.embed_channels=8"
    ) as info:
        check_autoencoder_meta(meta, ac, (1, 8, 8))
    assert "algorithm.autoencoder.path" in str(info.value)
    ok = AutoencoderConfig(path="ae.pt", embed_channels=4)
    check_autoencoder_meta(meta, ok, (1, 8, 8))
    with pytest.raises(ConfigError, match=r"input shape \(1, 8, 8\).*has \(1, 28, 28\)"):
        check_autoencoder_meta(meta, ok, (1, 28, 28))
    with pytest.raises(ConfigError, match="holds architecture 'unet'"):
        check_autoencoder_meta({**meta, "architecture": "unet"}, ok, (1, 8, 8))


def test_fedagg_refuses_an_autoencoder_file_of_other_embed_channels(tmp_path: Path) -> None:
    from tiny import FEDAGG_HOLDOUT, synthetic_context, tiny_fedagg

    from edgelearn.data.dataset import index_digest
    from edgelearn.models.autoencoder import ARCHITECTURE, build_autoencoder, save_autoencoder

    path = tmp_path / "ae.pt"
    ctx = synthetic_context([FEDAGG_HOLDOUT, "topology.edges=2", "topology.devices_per_edge=2"])
    held = ctx.bundle.holdout.index
    meta = {
        "architecture": ARCHITECTURE,
        "input_shape": [1, 8, 8],
        "embed_channels": 4,
        "source": "holdout",
        "dataset": ctx.bundle.name,
        "train_indices": held.tolist(),
        "indices_sha256": index_digest(held),
    }
    save_autoencoder(path, build_autoencoder((1, 8, 8), embed_channels=4).state_dict(), meta)
    with pytest.raises(ConfigError, match="embed_channels=4 but algorithm.autoencoder.embed_channels=8"):
        tiny_fedagg(ctx, autoencoder={"path": str(path), "embed_channels": 8})
    assert (
        tiny_fedagg(ctx, autoencoder={"path": str(path), "embed_channels": 4}).cfg.autoencoder.embed_channels
        == 4
    )
