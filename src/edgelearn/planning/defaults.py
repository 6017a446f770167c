"""A ready-made two-stage problem with our default parameters (for demos, tests, benchmarks).

The defaults are the usual FEEL simulation values (1 MHz shared by 10 devices at U[50, 250] m, 3GPP path
loss, 1 GHz devices and a 5 GHz server, kappa 1e-28, C = 1e6 cycles per MNIST sample, step sizes 0.05): Lyu
et al. (arXiv 2404.00836) simulate MNIST and CIFAR-derived tasks, but their parameter table was not
available to us. The lead's config layer builds problems from a run's system model; this helper only
reproduces this numerical setting without any of that machinery.
"""

from __future__ import annotations

import numpy as np

from edgelearn.planning.bound import BoundConstants
from edgelearn.planning.problem import TwoStageProblem
from edgelearn.seeding import Seeds
from edgelearn.system.channel import BANDWIDTH_HZ, DEVICE_DISTANCE_M, NOISE_PSD_DBM_PER_HZ
from edgelearn.system.costs import db_to_linear, dbm_to_w, path_loss_db
from edgelearn.system.hardware import DEVICE_F_MAX_HZ, DEVICE_P_MAX_W, EDGE_F_MAX_HZ, KAPPA_DEFAULT

CYCLES_PER_SAMPLE = 1e6
"""C = C~ = 1e6 cycles per sample (our default for the MNIST CNN, a usual FEEL value)."""

MODEL_PARAMS = 21_840
"""Parameters of our MNIST CNN (``cnn_small``); the gradient payload is 32 bits each."""

BITS_PER_PARAM = 32
"""fp32 gradients (payload q = 32 bits x parameters)."""

STEP_SIZE = 0.05
"""eta = eta~ = 0.05 (our default; the bound needs eta <= 1/L)."""

SAMPLES_PER_DEVICE = 600
"""Task samples per device (our MNIST split: 10 devices x 600)."""

GENERAL_SIZE = 50_000
"""General samples stored at the server (most of the MNIST training set; our choice)."""

SPEC_CONSTANTS = BoundConstants(L=1.0, sigma2_task=10.0, sigma2_general=10.0, Delta=2.3, delta=0.5**0.5)
"""Bound constants of our sanity run of the planner (L = 1, sigma^2 = 10, Delta = 2.3, delta^2 = 0.5;
tests/test_planning_solver.py checks its values)."""


def spec_problem(
    num_devices: int = 10,
    *,
    seed: int = 0,
    energy_j: float = 50.0,
    delay_s: float = 100.0,
    constants: BoundConstants = SPEC_CONSTANTS,
    fading_rounds: int | None = None,
    bandwidth_hz: float = BANDWIDTH_HZ,
) -> TwoStageProblem:
    """The default system with K devices at distances U[50, 250] m (seeded); Rayleigh fading drawn for
    ``fading_rounds`` rounds when given (per-round gains), else static path-loss gains."""
    seeds = Seeds(seed)
    distance = seeds.rng("channel").uniform(*DEVICE_DISTANCE_M, size=num_devices)
    gain = np.asarray(db_to_linear(-np.asarray(path_loss_db(distance))))
    if fading_rounds is not None:
        gain = gain[None, :] * seeds.rng("channel", 1).exponential(1.0, size=(fading_rounds, num_devices))
    return TwoStageProblem.from_arrays(
        f_max_server=EDGE_F_MAX_HZ,
        kappa_server=KAPPA_DEFAULT,
        cycles_per_sample_server=CYCLES_PER_SAMPLE,
        general_size=GENERAL_SIZE,
        eta_pre=STEP_SIZE,
        f_max=DEVICE_F_MAX_HZ,
        kappa=KAPPA_DEFAULT,
        cycles_per_sample=CYCLES_PER_SAMPLE,
        p_max=DEVICE_P_MAX_W,
        bandwidth=bandwidth_hz / num_devices,
        gain=gain,
        data_sizes=SAMPLES_PER_DEVICE,
        noise_psd=float(dbm_to_w(NOISE_PSD_DBM_PER_HZ)),
        payload_bits=float(BITS_PER_PARAM * MODEL_PARAMS),
        eta_ft=STEP_SIZE,
        energy_j=energy_j,
        delay_s=delay_s,
        constants=constants,
        num_devices=num_devices,
    )
