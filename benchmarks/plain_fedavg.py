"""FedAvg on scikit-learn's digits as a user would write it by hand: the baseline of ``startup.py``.

One module, no edgelearn: scikit-learn's digits (8x8, standardized with the training set's mean and std), an
80/20 per-class split, a Dirichlet(0.5) label split over 100 devices (topped up to 2 samples each), an MLP
64-128-10, and per round a Python loop over the devices, each copying the global weights and running
``torch.optim.SGD`` (lr 0.05, one epoch of batches of 16), then a sample-weighted average and a test-set
evaluation. torch keeps its default thread count. Same work as workload W of ``startup.py``
(``configs/fedavg-digits.yaml`` with 20 rounds, one local epoch, lr 0.05); the numbers differ from
edgelearn's in the random streams only (final accuracy ~0.83 for both).

Usage: ``python benchmarks/plain_fedavg.py [--rounds 20] [--devices 100] [--timings out.json]``.
"""

from __future__ import annotations

import argparse
import json
import time

T_START = time.time()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

T_TORCH = time.time()


def dirichlet_split(
    labels: np.ndarray, devices: int, alpha: float, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per-class Dirichlet(alpha) shares over devices; a device under min_size takes from the largest."""
    parts: list[list[int]] = [[] for _ in range(devices)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cuts = (np.cumsum(rng.dirichlet([alpha] * devices)) * idx.size).astype(int)[:-1]
        for device, chunk in enumerate(np.split(idx, cuts)):
            parts[device].extend(chunk.tolist())
    for part in parts:
        while len(part) < min_size:
            largest = max(parts, key=len)
            part.append(largest.pop(int(rng.integers(len(largest)))))
    return [np.array(p, dtype=np.int64) for p in parts]


def main() -> None:
    """Train and print the final test accuracy (and write phase timestamps with ``--timings``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--timings", default=None, help="write wall-clock phase timestamps (JSON) here")
    args = parser.parse_args()

    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images.reshape(-1, 64) / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.int64)
    rng = np.random.default_rng(0)
    test_mask = np.zeros(len(y), dtype=bool)
    for cls in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == cls))
        test_mask[idx[: round(0.2 * idx.size)]] = True
    train_idx, test_idx = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
    x = (x - x[train_idx].mean()) / x[train_idx].std()  # standardize with the training set's statistics
    parts = dirichlet_split(digits.target[train_idx], args.devices, 0.5, 2, rng)
    clients = [(x[train_idx[p]], y[train_idx[p]]) for p in parts]
    test_x, test_y = x[test_idx], y[test_idx]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    loss_fn = nn.CrossEntropyLoss()
    t_ready = time.time()
    round_ends = []
    accuracy = 0.0
    for _ in range(args.rounds):
        global_state = {k: v.clone() for k, v in model.state_dict().items()}
        total = {k: torch.zeros_like(v) for k, v in global_state.items()}
        samples = 0
        for cx, cy in clients:
            model.load_state_dict(global_state)
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            order = torch.randperm(len(cy))
            for start in range(0, len(cy), 16):
                batch = order[start : start + 16]
                opt.zero_grad()
                loss_fn(model(cx[batch]), cy[batch]).backward()
                opt.step()
            for k, v in model.state_dict().items():
                total[k] += v * len(cy)
            samples += len(cy)
        model.load_state_dict({k: v / samples for k, v in total.items()})
        with torch.no_grad():
            accuracy = float((model(test_x).argmax(1) == test_y).float().mean())
        round_ends.append(time.time())
    print(f"final test accuracy {accuracy:.3f} after {args.rounds} rounds on {args.devices} devices")
    if args.timings:
        with open(args.timings, "w", encoding="utf-8") as handle:
            json.dump(
                {
                    "start": T_START,
                    "torch_imported": T_TORCH,
                    "ready": t_ready,
                    "round_ends": round_ends,
                    "threads": torch.get_num_threads(),
                    "accuracy": accuracy,
                },
                handle,
            )


if __name__ == "__main__":
    main()
