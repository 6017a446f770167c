"""The physical system: topology tree, hardware, channel, cost formulas, ledger and virtual clock.

Pure numpy (no torch): algorithms report FLOPs and bytes through ``SystemModel`` and read joules, seconds
and bytes back from its ``Ledger``.
"""

from edgelearn.system.channel import Channel, ChannelSpec
from edgelearn.system.costs import (
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
    CLOUD_DEFAULT,
    DEVICE_DEFAULT,
    EDGE_DEFAULT,
    TIER_DEFAULTS,
    HardwareProfile,
    HardwareSpec,
    profile_arrays,
    sample_profiles,
)
from edgelearn.system.ledger import Ledger, VirtualClock
from edgelearn.system.model import SystemModel
from edgelearn.system.topology import Node, Tier, Topology

__all__ = [
    "CLOUD_DEFAULT",
    "DEVICE_DEFAULT",
    "EDGE_DEFAULT",
    "TIER_DEFAULTS",
    "AvailabilityTrace",
    "Channel",
    "ChannelSpec",
    "EdgeOutage",
    "FaultModel",
    "HardwareProfile",
    "HardwareSpec",
    "Ledger",
    "Node",
    "SystemModel",
    "Tier",
    "Topology",
    "VirtualClock",
    "compute_cycles",
    "compute_delay",
    "compute_energy",
    "db_to_linear",
    "dbm_to_w",
    "linear_to_db",
    "path_loss_db",
    "profile_arrays",
    "sample_profiles",
    "shannon_rate",
    "transmit_delay",
    "transmit_energy",
    "w_to_dbm",
]
