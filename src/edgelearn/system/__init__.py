"""The physical system: topology tree, hardware, channel, cost formulas, ledger and virtual clock.

Pure numpy (no torch): algorithms report FLOPs and bytes through ``SystemModel`` and read joules, seconds
and bytes back from its ``Ledger``. Hardware comes in two kinds (DVFS CPUs, accelerators) and named,
sourced profiles (``catalog``); :func:`register_hardware_profile` adds profiles of one's own.
"""

from edgelearn.system.catalog import (
    CLOUD_DEFAULT,
    DEVICE_DEFAULT,
    EDGE_DEFAULT,
    TIER_DEFAULT_PROFILES,
    TIER_DEFAULTS,
    HardwareEntry,
    hardware_profile,
    hardware_profiles,
    register_hardware_profile,
    sample_profiles,
)
from edgelearn.system.channel import Channel, ChannelSpec
from edgelearn.system.costs import (
    compute_cost,
    compute_cycles,
    compute_delay,
    compute_energy,
    db_to_linear,
    dbm_to_w,
    linear_to_db,
    path_loss_db,
    shannon_rate,
    transmit_delay,
    transmit_energy,
    w_to_dbm,
)
from edgelearn.system.faults import AvailabilityTrace, EdgeOutage, FaultModel
from edgelearn.system.hardware import (
    ACCELERATOR,
    DVFS,
    HardwareProfile,
    HardwareSpec,
    profile_arrays,
)
from edgelearn.system.ledger import Ledger, VirtualClock
from edgelearn.system.model import OperatingPoint, SystemModel
from edgelearn.system.screen import RoundScreen
from edgelearn.system.topology import Node, Tier, Topology

__all__ = [
    "ACCELERATOR",
    "CLOUD_DEFAULT",
    "DEVICE_DEFAULT",
    "DVFS",
    "EDGE_DEFAULT",
    "TIER_DEFAULTS",
    "TIER_DEFAULT_PROFILES",
    "AvailabilityTrace",
    "Channel",
    "ChannelSpec",
    "EdgeOutage",
    "FaultModel",
    "HardwareEntry",
    "HardwareProfile",
    "HardwareSpec",
    "Ledger",
    "Node",
    "OperatingPoint",
    "RoundScreen",
    "SystemModel",
    "Tier",
    "Topology",
    "VirtualClock",
    "compute_cost",
    "compute_cycles",
    "compute_delay",
    "compute_energy",
    "db_to_linear",
    "dbm_to_w",
    "hardware_profile",
    "hardware_profiles",
    "linear_to_db",
    "path_loss_db",
    "profile_arrays",
    "register_hardware_profile",
    "sample_profiles",
    "shannon_rate",
    "transmit_delay",
    "transmit_energy",
    "w_to_dbm",
]
