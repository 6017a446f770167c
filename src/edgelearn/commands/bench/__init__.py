"""``edgelearn bench``: the executors (serial, vmap, auto, ray) against centralized training and a naive FL
loop.

``edgelearn bench`` and ``benchmarks/bench.py`` call :func:`edgelearn.commands.bench.main.main`. Every
measurement runs the real code path (``build_config`` -> ``build_context`` -> FedAvg -> ``executor.train``)
in its own process, so its peak RSS belongs to that run alone. Workloads (issue 5):

* **W**: digits, MLP 64-128-10, 100 devices (Dirichlet 0.5), all devices every round, one local epoch of
  SGD (lr 0.05, batch 16), 20 rounds; per executor and against centralized training of the same samples.
* **W1000**: W scaled to 1,000 devices. Digits holds only 1,438 training samples, so W1000 trains the same
  MLP on synthetic 1x8x8 data with the same ~14 samples per device; it adds the naive baseline, a plain
  PyTorch loop that deep-copies the global model into one module per device. The vmap and auto executors
  are also *paired* with that loop: both run round by round, alternating, in one process
  (``references.measure_paired``), so load from other programs on a shared machine hits both alike.
* **Scaling**: one FedAvg round over 10 ... 10,000 devices (synthetic, ~14 samples each), wall seconds and
  peak RSS per run.
* **CNN**: ``cnn_small`` on Fashion-MNIST (skipped with a note if the files are absent), fewer rounds.
* **Threads**: W on vmap with ``engine.torch_threads`` auto (the default), 1 and 2, each idle and beside a
  busy neighbour (a second process spinning one core, started and stopped here); the steady round (median
  from round ``THREAD_STEADY_FROM``) and its ratio to the one-thread round under the same condition. The
  settings alternate round by round in one process per condition (``threads.measure_threads``).

Timing: ``loop_s`` is the time inside the round loop only; ``wall_s`` is everything of a run (data loading,
partition, executor start, warm-up, loop, final evaluation) except interpreter start and module imports,
which a fork server does once (``jobs.PRELOAD``). Before the loop each executor is warmed up on
``WARMUP_CLIENTS`` clients for ``WARMUP_STEPS`` steps (module construction, Ray actors), which does not
change the run's results. Peak RSS is the process's ``getrusage`` maximum (a forked process starts from the
server's imported modules, as a fresh interpreter would); Ray records add their workers' peaks.

Modules, in the order a run uses them: ``plan`` (workload settings and the :class:`BenchPlan`), ``jobs`` (one
measurement process per job, failure records, ``run_plan``), ``measure`` (FedAvg on each executor, scaling),
``references`` (centralized SGD and the naive loop, paired runs), ``threads`` (the thread study), ``rss``
(memory readings), ``records`` (record schema, ratios, Done-when summary), ``tables`` (rich output) and
``main`` (the command: plan, run, print, write JSON). This file imports nothing.
"""
