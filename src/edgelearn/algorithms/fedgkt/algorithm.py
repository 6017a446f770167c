"""FedGKT (He, Annavaram & Avestimehr, "Group Knowledge Transfer", NeurIPS 2020) on the edge learning tree.

Every device (client) owns a small model split into a feature extractor and a classifier head; the cloud
(server) owns a large model that classifies the clients' extracted features. One round, as FedGKT's
Algorithm 1:

1. every client trains its whole model on its data with ``CE + beta * KD_T(client, server logits)`` (plain CE
   in round 1, before any server logits exist);
2. every client extracts, without gradients, the features and logits of all its samples and sends features,
   logits and labels up to the cloud, hop by hop (edges relay, every hop charged);
3. the server trains on all features with ``CE + beta * KD_T(server, client logits)`` (``server_loss: paper``,
   FedGKT's Eq. 6) or ``KD_T + beta * CE`` (``server_loss: fedml``, the FedML code that FedAgg's authors' code
   inherits);
4. the server infers its logits on every client's features and sends each client its own, hop by hop down.

Mapping onto the tree (the layout of FedAgg's FedGKT baseline, Wu et al., INFOCOM 2024, §VI): devices are
the clients, the cloud is the single server, edge servers only relay. Per-tier models: ``models.device`` is
the client (split after its convolutional body: the extractor is everything before the global pooling + FC
head), ``models.cloud`` is the server, built for the feature shape; ``models.edge`` is unused. Defaults as
FedAgg's per-tier defaults (:func:`~edgelearn.algorithms.kit.tiers.resolve_tier_models`).

The delivered model is FedGKT's own test-time model: a client's extractor followed by the server. As in
FedGKT's evaluation (each client extracts its test samples, the server classifies the pooled features), the
test set is dealt out over ``eval_devices`` devices (a fixed seeded sample), each share is extracted by its
device and the server classifies them all; ``accuracy`` is over the whole test set. ``accuracy_by_tier`` adds
the mean accuracy of those devices' own full client models (on the fixed ``tier_eval_samples`` subset);
edges hold no model (``edge: None``). Evaluation is not charged to the ledger, as for every algorithm.

Faults (``faults`` config, system/faults.py), as HierFAVG honours them: a device that is unavailable or sits
below a failed edge (it cannot reach the server; devices are not re-routed) skips the round: it neither trains
nor uploads nor receives logits. The others train; a straggler past the deadline (predicted: training plus
extraction, then its features + logits + labels upload) is cut off there, charged what it spent and keeps its
previous model; a lost upload is charged in full on the device's own link and delivers nothing. The server
trains on the features that arrived and sends logits back to those clients only (the rest keep their older
server logits, or plain CE if they never got any); when nothing arrives it keeps its model.

Deviations, on purpose: SGD with momentum as the engine runs it (FedML uses Nesterov momentum and weight
decay); the server's logits are inferred in eval mode after its training pass (FedML keeps the train-mode
outputs of the training pass itself), charged as one extra forward pass.

The machinery lives in :mod:`edgelearn.algorithms.kit.split` (it serves FedDKC too); this module names it.
"""

from __future__ import annotations

from edgelearn.algorithms.fedgkt.config import FedGKTConfig
from edgelearn.algorithms.kit.split import SplitTransfer


class FedGKT(SplitTransfer):
    """FedGKT over the tree: devices are clients, the cloud is the server, edges relay (module docstring)."""

    name = "fedgkt"
    config_class = FedGKTConfig
