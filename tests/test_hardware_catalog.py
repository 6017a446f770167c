"""Hardware kinds and the profile catalog: hand-computed compute costs through SystemModel and its ledger
(DVFS, accelerator, a mixed tree), the catalog's sources and numbers, the config's profile / kind / number
resolution and its errors, run-time registration, and the CLI's exit code for a bad profile."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelearn.errors import ConfigError
from edgelearn.run_config import build_config, dump_config
from edgelearn.seeding import Seeds
from edgelearn.system import (
    ACCELERATOR,
    DVFS,
    TIER_DEFAULT_PROFILES,
    ChannelSpec,
    HardwareProfile,
    HardwareSpec,
    SystemModel,
    Tier,
    Topology,
    hardware_profile,
    hardware_profiles,
    register_hardware_profile,
)
from edgelearn.system import catalog as catalog_module
from edgelearn.system.catalog import catalog_summaries
from edgelearn.system.costs import compute_cost, compute_cycles, compute_delay, compute_energy
from edgelearn.system.hardware import (
    CYCLES_PER_FLOP_DEFAULT,
    DEVICE_F_MAX_HZ,
    DEVICE_P_MAX_W,
    EDGE_F_MAX_HZ,
    KAPPA_DEFAULT,
    SERVER_P_MAX_W,
)
from edgelearn.yamlsafe import load_yaml

ROOT = Path(__file__).resolve().parents[1]

DATACENTER_J_PER_FLOP = 1e-10
"""Most energy per FLOP a datacenter GPU (and so the default cloud) may cost: real ones are ~1e-11 J."""

FLOPS = 3.0e12
"""A FLOP count for the hand-computed charges (a few hundred local steps of a small CNN)."""


@pytest.fixture
def registry() -> Iterator[dict]:
    """Run-time registrations made by a test are dropped afterwards."""
    saved = dict(catalog_module._REGISTERED)
    yield catalog_module._REGISTERED
    catalog_module._REGISTERED.clear()
    catalog_module._REGISTERED.update(saved)


def system(topology: Topology, specs: dict[Tier, HardwareSpec]) -> SystemModel:
    return SystemModel.build(topology, specs, ChannelSpec(), Seeds(0))


# ------------------------------------------------------------------------------ hand-computed charges
def test_dvfs_node_by_hand() -> None:
    """cycles = FLOPs x cpf, delay = cycles / f, energy = kappa x cycles x f^2 (Lyu et al.'s DVFS model)."""
    f, kappa, cpf = 2e9, 3e-28, 0.5
    sm = system(Topology.flat(1), {Tier.DEVICE: HardwareSpec(f_max_hz=f, kappa=kappa, cycles_per_flop=cpf)})
    sm.begin_round(0)
    seconds, joules = sm.compute(1, FLOPS)
    cycles = FLOPS * cpf  # 1.5e12
    assert seconds == pytest.approx(cycles / f, rel=1e-12)  # 750 s
    assert joules == pytest.approx(kappa * cycles * f**2, rel=1e-12)  # 1800 J
    tot = sm.totals()
    assert tot["by_tier"]["device"]["compute_j"] == pytest.approx(1800.0, rel=1e-12)
    assert tot["delay_s"] == pytest.approx(750.0, rel=1e-12)
    # at half the clock: twice the time, a quarter of the energy
    sm.begin_round(1)
    seconds, joules = sm.compute(1, FLOPS, freq_hz=f / 2)
    assert (float(seconds), float(joules)) == pytest.approx((1500.0, 450.0), rel=1e-12)


def test_accelerator_node_by_hand() -> None:
    """delay = FLOPs / flops_per_s, energy = power_w x delay."""
    h100 = hardware_profile("h100")
    sm = system(Topology.flat(1), {Tier.CLOUD: h100.spec(Tier.CLOUD)})
    sm.begin_round(0)
    seconds, joules = sm.compute(0, FLOPS)
    assert seconds == pytest.approx(FLOPS / 1.9788e14, rel=1e-12)  # 15.16 ms
    assert joules == pytest.approx(700.0 * FLOPS / 1.9788e14, rel=1e-12)  # 10.6 J
    tot = sm.totals()
    assert tot["by_tier"]["cloud"]["compute_j"] == pytest.approx(float(joules), rel=1e-12)
    assert tot["by_tier"]["cloud"]["flops"] == FLOPS
    assert tot["delay_s"] == pytest.approx(float(seconds), rel=1e-12)
    assert sm.seconds_per_flop[0] == pytest.approx(1 / 1.9788e14) and np.isnan(sm.f_max_hz[0])


def test_mixed_tree_from_config_by_hand() -> None:
    """DVFS devices (paper_device), Xeon edge servers, an A100 cloud: one vectorized charge, hand totals."""
    from edgelearn.runner import build_system, build_topology

    cfg = build_config(
        {"topology": {"edges": 2, "devices_per_edge": 2}, "hardware": {"edge": {"profile": "xeon_gold_6248"}}}
    )
    sm = build_system(cfg, build_topology(cfg), Seeds(0))
    topo = sm.topology
    assert sm.dvfs.tolist() == [tier == Tier.DEVICE for tier in (n.tier for n in topo.nodes)]
    sm.begin_round(0)
    work = {Tier.DEVICE: 4e9, Tier.EDGE: 2e12, Tier.CLOUD: 6e13}
    ids = list(range(topo.num_nodes))
    seconds, joules = sm.compute(ids, [work[n.tier] for n in topo.nodes])
    device = 4e9 * 0.25  # cycles at 1 GHz: 1 s, 1e-28 * 1e9 * 1e18 = 0.1 J each
    by_hand = {
        Tier.DEVICE: (device / 1e9, KAPPA_DEFAULT * device * 1e9**2),
        Tier.EDGE: (2e12 / 1.28e12, 150.0 * 2e12 / 1.28e12),  # 1.5625 s, 234.375 J each
        Tier.CLOUD: (6e13 / 6.24e13, 400.0 * 6e13 / 6.24e13),  # 0.9615 s, 384.6 J
    }
    for i, node in enumerate(topo.nodes):
        assert (seconds[i], joules[i]) == pytest.approx(by_hand[node.tier], rel=1e-12)
    tiers = sm.totals()["by_tier"]
    assert tiers["device"]["compute_j"] == pytest.approx(4 * 0.1, rel=1e-12)
    assert tiers["edge"]["compute_j"] == pytest.approx(2 * 234.375, rel=1e-12)
    assert tiers["cloud"]["compute_j"] == pytest.approx(400.0 * 6e13 / 6.24e13, rel=1e-12)


def test_default_cloud_costs_at_most_1e_10_joules_per_flop() -> None:
    from edgelearn.runner import build_system, build_topology

    cfg = build_config({"topology": {"devices": 3}})
    assert (cfg.hardware.cloud.profile, cfg.hardware.cloud.kind) == ("a100", ACCELERATOR)
    sm = build_system(cfg, build_topology(cfg), Seeds(0))
    sm.begin_round(0)
    _, joules = sm.compute(0, FLOPS)
    assert float(joules) / FLOPS <= DATACENTER_J_PER_FLOP
    assert sm.totals()["by_tier"]["cloud"]["compute_j"] / FLOPS <= DATACENTER_J_PER_FLOP
    # devices and edge servers keep the paper's DVFS CPUs
    assert TIER_DEFAULT_PROFILES == {Tier.DEVICE: "paper_device", Tier.EDGE: "paper_edge", Tier.CLOUD: "a100"}


positive = st.floats(min_value=1e-3, max_value=1e3)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    flops=st.lists(st.floats(min_value=0.0, max_value=1e15), min_size=1, max_size=6),
    f_ghz=positive,
    kappa_e28=positive,
    cpf=st.floats(min_value=0.01, max_value=10.0),
    tflops=positive,
    watts=positive,
    kinds=st.lists(st.booleans(), min_size=1, max_size=6),
)
def test_compute_charges_follow_each_kinds_formula(
    flops: list[float],
    f_ghz: float,
    kappa_e28: float,
    cpf: float,
    tflops: float,
    watts: float,
    kinds: list[bool],
) -> None:
    """Random FLOP counts on random DVFS and accelerator nodes: what SystemModel returns and the ledger
    records is each node's own formula; the DVFS path is bit for bit the historical one."""
    n = min(len(flops), len(kinds))
    dvfs = HardwareProfile(f_max_hz=f_ghz * 1e9, kappa=kappa_e28 * 1e-28, cycles_per_flop=cpf, p_max_w=0.1)
    accel = HardwareProfile(kind=ACCELERATOR, flops_per_s=tflops * 1e12, power_w=watts, p_max_w=0.1)
    topo = Topology.flat(n)
    profiles = [accel] + [dvfs if kinds[i] else accel for i in range(n)]
    sm = SystemModel.build(topo, None, ChannelSpec(), Seeds(0))  # for its channel
    sm = SystemModel(topo, profiles, sm.channel)
    work = np.array(flops[:n])
    ids = np.arange(1, n + 1)
    sm.begin_round(0)
    seconds, joules = sm.compute(ids, work)
    for i, p in enumerate(profiles[1:]):
        if p.kind == DVFS:
            cycles = compute_cycles(work[i], cpf)
            assert seconds[i] == compute_delay(cycles, p.f_max_hz)  # exact: the same operations
            assert joules[i] == compute_energy(p.kappa, cycles, p.f_max_hz)
        else:
            assert seconds[i] == pytest.approx(work[i] / (tflops * 1e12), rel=1e-12)
            assert joules[i] == pytest.approx(watts * work[i] / (tflops * 1e12), rel=1e-12)
    assert sm.totals()["compute_j"] == pytest.approx(float(np.sum(joules)), rel=1e-12)
    assert sm.totals()["flops"] == pytest.approx(float(work.sum()), rel=1e-12)


def test_compute_cost_matches_the_dvfs_formulas_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    flops, cpf = rng.uniform(0, 1e12, 50), rng.uniform(0.1, 2, 50)
    f, kappa = rng.uniform(1e8, 5e9, 50), rng.uniform(1e-29, 1e-27, 50)
    seconds, joules = compute_cost(flops, cpf, f, kappa, np.full(50, np.nan), np.ones(50, bool))
    cycles = compute_cycles(flops, cpf)
    np.testing.assert_array_equal(seconds, compute_delay(cycles, f))
    np.testing.assert_array_equal(joules, compute_energy(kappa, cycles, f))


def test_a_clock_on_an_accelerator_node_is_an_error() -> None:
    sm = system(Topology.flat(2), {})  # default: an A100 cloud over paper devices
    sm.begin_round(0)
    sm.compute([1, 2], 1e9, freq_hz=5e8)  # devices are DVFS: fine
    with pytest.raises(ConfigError, match=r"cloud node 0 is an accelerator.*hardware\.cloud"):
        sm.compute([1, 0], 1e9, freq_hz=5e8)
    with pytest.raises(ConfigError, match="hardware.cloud"):
        sm.require_dvfs([0, 1], "the two-stage planner's clock choice")


# ------------------------------------------------------------------------------ the catalog
def test_every_catalog_entry_cites_a_source_and_has_valid_numbers() -> None:
    entries = hardware_profiles()
    assert {"paper_device", "paper_edge", "raspberry_pi_4", "jetson_nano", "jetson_orin_nano"} <= set(entries)
    assert {"xeon_gold_6248", "a100", "h100"} <= set(entries)
    for name, entry in entries.items():
        assert entry.builtin and entry.name == name
        assert len(entry.source.split()) >= 5, name  # a real citation, not a placeholder
        assert entry.kind in (DVFS, ACCELERATOR)
        node = entry.node()  # every number finite and > 0, the kind's fields all present
        assert 0 < node.joules_per_flop < 1e-8 and 0 < node.seconds_per_flop < 1e-8, name
        if entry.kind == ACCELERATOR:
            assert entry.assumption, name  # sustained-vs-peak is always an assumption: it must be stated
    for name in ("a100", "h100"):
        assert entries[name].node().joules_per_flop <= DATACENTER_J_PER_FLOP


def test_paper_profiles_are_the_papers_numbers() -> None:
    device, edge = hardware_profile("paper_device"), hardware_profile("paper_edge")
    assert dict(device.values) == {
        "f_max_hz": DEVICE_F_MAX_HZ,
        "kappa": KAPPA_DEFAULT,
        "cycles_per_flop": CYCLES_PER_FLOP_DEFAULT,
        "p_max_w": DEVICE_P_MAX_W,
    }
    assert dict(edge.values) == {
        "f_max_hz": EDGE_F_MAX_HZ,
        "kappa": KAPPA_DEFAULT,
        "cycles_per_flop": CYCLES_PER_FLOP_DEFAULT,
        "p_max_w": SERVER_P_MAX_W,
    }
    assert "2404.00836" in device.source and "2404.00836" in edge.source


def test_catalog_ships_as_package_data() -> None:
    assert '"system/catalog.yaml"' in (ROOT / "pyproject.toml").read_text()  # [tool.setuptools.package-data]
    assert (ROOT / "src" / "edgelearn" / "system" / "catalog.yaml").is_file()


# ------------------------------------------------------------------------------ configs
def test_a_tier_names_a_profile_and_overrides_its_numbers() -> None:
    cfg = build_config(
        {},
        [
            "hardware.cloud.profile=h100",
            "hardware.cloud.power_w=650",
            "hardware.device.profile=raspberry_pi_4",
            "hardware.device.flops_per_s=[4.0e+9, 8.0e+9]",
        ],
    )
    cloud, device = cfg.hardware.cloud, cfg.hardware.device
    assert (cloud.profile, cloud.kind, cloud.flops_per_s) == ("h100", ACCELERATOR, 1.9788e14)
    assert cloud.power_w == 650
    assert (device.profile, device.flops_per_s, device.p_max_w) == ("raspberry_pi_4", (4e9, 8e9), 0.1)
    assert cloud.f_max_hz is None and cloud.p_max_w == SERVER_P_MAX_W  # the tier's radio
    # the saved config names every tier's profile and numbers, and loads back to the same config
    saved = load_yaml(dump_config(cfg))["hardware"]
    assert saved["cloud"] == {
        "profile": "h100", "kind": "accelerator", "flops_per_s": 1.9788e14, "power_w": 650.0, "p_max_w": 1.0
    }  # fmt: skip
    assert saved["edge"]["profile"] == "paper_edge"
    assert build_config({"hardware": saved}).hardware == cfg.hardware


def test_a_tier_gives_numbers_without_a_profile() -> None:
    cfg = build_config(
        {"hardware": {"cloud": {"kind": "dvfs", "f_max_hz": 2e10}, "edge": {"kind": "accelerator",
         "flops_per_s": 1e12, "power_w": 100, "idle_power_w": 0}}}
    )  # fmt: skip
    cloud, edge = cfg.hardware.cloud, cfg.hardware.edge
    assert (cloud.profile, cloud.kind, cloud.kappa, cloud.cycles_per_flop) == (None, DVFS, 1e-28, 0.25)
    assert (edge.profile, edge.idle_power_w, edge.p_max_w) == (None, 0.0, 1.0)


@pytest.mark.parametrize(
    ("override", "key", "says"),
    [
        ("hardware.cloud.profile=nope", "hardware.cloud.profile", "known profiles: a100"),
        ("hardware.edge.profile=A100", "hardware.edge.profile", "unknown hardware profile"),
        ("hardware.cloud.kappa=1.0e-28", "hardware.cloud.kappa", "field of dvfs hardware"),
        ("hardware.device.flops_per_s=1.0e+9", "hardware.device.flops_per_s", "field of accelerator"),
        ("hardware.cloud.kind=dvfs", "hardware.cloud.f_max_hz", "dvfs hardware needs"),
        ("hardware.edge.kind=accelerator", "hardware.edge.flops_per_s", "accelerator hardware needs"),
        ("hardware.cloud.kind=gpu", "hardware.cloud.kind", "'dvfs' or 'accelerator'"),
        ("hardware.cloud.power_w=-1", "hardware.cloud.power_w", "greater than 0"),
        ("hardware.cloud.idle_power_w=900", "hardware.cloud.idle_power_w", "exceeds the active power"),
        ("hardware.cloud.profil=a100", "hardware.cloud.profil", "not a known key"),
        ("hardware.gpu.profile=a100", "hardware.gpu", "not a known key"),
    ],
)
def test_bad_profiles_and_keys_are_config_errors_naming_the_key(override: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({}, [override])
    assert f"`{key}" in str(info.value) and says in str(info.value)


def test_a_kind_contradicting_the_profile_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"`hardware\.device\.kind`: profile 'a100' is accelerator"):
        build_config({"hardware": {"device": {"profile": "a100", "kind": "dvfs"}}})


def test_loading_a_config_imports_no_cost_model_until_it_validates() -> None:
    """The hardware section resolves its profiles lazily: importing edgelearn.config pulls in no numpy."""
    code = "import sys, edgelearn.config\nprint('numpy' in sys.modules, 'edgelearn.system' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------------------ registration
def test_registered_profiles_work_in_configs(registry: dict) -> None:
    lab_gpu = {"kind": "accelerator", "flops_per_s": 2e13, "power_w": 250, "source": "our own meter, 2024"}
    entry = register_hardware_profile("lab_gpu", lab_gpu)
    assert entry.node().joules_per_flop == pytest.approx(1.25e-11)
    cfg = build_config({}, ["hardware.edge.profile=lab_gpu"])
    assert (cfg.hardware.edge.flops_per_s, cfg.hardware.edge.power_w) == (2e13, 250)
    spec = HardwareSpec(f_max_hz=(1e9, 2e9), p_max_w=0.2)
    register_hardware_profile("phone_cpu", spec, source="vendor sheet", assumption="DVFS range")
    assert hardware_profile("phone_cpu").values["f_max_hz"] == (1e9, 2e9)
    with pytest.raises(ConfigError, match="lab_gpu"):  # the known names listed include registered ones
        build_config({}, ["hardware.cloud.profile=nope"])


@pytest.mark.parametrize(
    ("name", "spec", "says"),
    [
        ("a100", {"kind": "accelerator", "flops_per_s": 1e13, "power_w": 1, "source": "s"}, "already exists"),
        ("mine", {"kind": "accelerator", "flops_per_s": 1e13, "power_w": 1}, "`source` must say"),
        ("mine", {"kind": "accelerator", "flops_per_s": 1e13, "source": "s"}, "needs `power_w`"),
        ("mine", {"kind": "dvfs", "f_max_hz": 1e9, "power_w": 1, "source": "s"}, "field of accelerator"),
        ("mine", {"kind": "tpu", "source": "s"}, "`kind` is 'tpu'"),
        ("mine", {"kind": "dvfs", "f_max_hz": 1e9, "clock": 1, "source": "s"}, "unknown key"),
        ("My GPU", {"kind": "accelerator", "flops_per_s": 1, "power_w": 1, "source": "s"}, "not valid"),
        ("null", {"kind": "accelerator", "flops_per_s": 1, "power_w": 1, "source": "s"}, "not valid"),
        ("mine", 42, "expected a mapping"),
    ],
)
def test_bad_registrations_are_config_errors(registry: dict, name: str, spec: object, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        register_hardware_profile(name, spec)  # type: ignore[arg-type]
    assert name not in registry


def test_a_name_registers_once_unless_replaced_on_purpose(registry: dict) -> None:
    spec = {"kind": "accelerator", "flops_per_s": 1e13, "power_w": 100, "source": "datasheet"}
    register_hardware_profile("twice", spec)
    with pytest.raises(ConfigError, match="(?s)already exists.*replace=True"):
        register_hardware_profile("twice", spec)
    register_hardware_profile("twice", {**spec, "power_w": 50}, replace=True)
    assert hardware_profile("twice").values["power_w"] == 50
    with pytest.raises(ConfigError, match="already exists"):  # built-ins never: the defaults rest on them
        register_hardware_profile("a100", spec, replace=True)
    listed = dict(catalog_summaries())
    assert listed["twice"] == "accelerator: flops_per_s=1e+13, power_w=50; 5e-12 J/FLOP (registered)"
    assert listed["a100"].startswith("accelerator: flops_per_s=6.24e+13, power_w=400; 6.4e-12 J/FLOP")


# ------------------------------------------------------------------------------ CLI
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgelearn", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_cli_unknown_profile_exits_2_naming_the_key(tmp_path: Path) -> None:
    proc = _cli(
        "run", "configs/fedavg-digits.yaml", "--set", "hardware.cloud.profile=nope", "--out", str(tmp_path)
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "hardware.cloud.profile" in proc.stderr and "a100" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_two_stage_on_an_accelerator_server_exits_2_naming_the_key(tmp_path: Path) -> None:
    proc = _cli(
        "run", "configs/two_stage/digits.yaml", "--set", "hardware.cloud.profile=a100", "--out", str(tmp_path)
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "hardware.cloud" in proc.stderr and "DVFS" in proc.stderr and "Traceback" not in proc.stderr


def test_resuming_a_run_saved_with_the_old_dvfs_cloud_names_the_key(tmp_path: Path) -> None:
    """Run directories written before profiles saved the cloud as a 20 GHz DVFS CPU: refused, key named."""
    out = tmp_path / "run"
    out.mkdir()
    old = "hardware:\n  cloud: {f_max_hz: 2.0e+10, kappa: 1.0e-28, cycles_per_flop: 0.25, p_max_w: 1.0}\n"
    (out / "config.yaml").write_text(old)
    proc = _cli("run", "configs/fedavg-digits.yaml", "--out", str(out), "--resume")
    assert proc.returncode == 2, proc.stderr
    assert "cannot resume" in proc.stderr and "hardware.cloud.f_max_hz" in proc.stderr
    assert "Traceback" not in proc.stderr
