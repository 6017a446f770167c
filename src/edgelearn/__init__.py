"""edgelearn: learning across end devices, edge servers and the cloud, with an honest ledger of
energy, delay and bytes."""

__version__ = "0.1.0"
