"""Resource planning for any algorithm on any tree: a round's work profile read from the ledger
(:mod:`~edgelearn.planning.tree.profile`), per-node clocks and per-link transmit powers chosen by one convex
program (:mod:`~edgelearn.planning.tree.inner`), each server's FDMA bandwidth split
(:mod:`~edgelearn.planning.tree.bandwidth`), and the schemes it is compared with
(:mod:`~edgelearn.planning.tree.plan`)."""
