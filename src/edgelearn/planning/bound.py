"""Convergence bounds of two-stage edge learning as pluggable objectives of problem (P1).

Lyu et al. (arXiv 2404.00836) minimise a bound on the average squared gradient norm; their bound was not
available to us, so every form here is ours: A derived from the four assumption types the paper names, B
and C alternatives it might use instead, D and E our extensions.

A bound maps (M, N, the two inverse-batch sums, the constants, the step sizes) to a number the planner
minimises. The planner only ever calls :meth:`Bound.value`, and relies on one structural property that all
three forms below have: for fixed (M, N) the value is affine and non-decreasing in the two inverse-batch
sums ``S_pre = sum_m 1/D~^(m)`` and ``S_ft = sum_n 1/sum_k B~_k^(n)``. :func:`affine_parts` recovers that
affine structure (at fixed (M, N) the planner minimises only the batch-dependent part J) by evaluation, so
a user-written bound needs no extra methods.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Protocol, runtime_checkable

from edgelearn.errors import ConfigError

AFFINE_CHECK_POINT = (2.0, 3.0)
"""(S_pre, S_ft) at which :func:`affine_parts` checks that a bound is really affine in the two sums."""

AFFINE_CHECK_RTOL = 1e-6
"""Relative tolerance of that affinity check."""

CONDITION_NUMBER_DEFAULT = 100.0
"""L / mu for form B's Polyak-Lojasiewicz constant mu. Our guess (form A needs no PL constant); 100 keeps
pre-training useful for a few hundred rounds at eta = 0.05, L ~ 1-10."""


@dataclass(frozen=True)
class BoundConstants:
    """Problem constants of the bound: smoothness L, per-sample gradient variances of the task and general
    distributions, initial gap Delta = F(w~0) - F*, gradient mismatch delta = sup ||grad F - grad F~||, and
    (form C only) the loss gap sup |F - F~|."""

    L: float
    sigma2_task: float
    sigma2_general: float
    Delta: float
    delta: float
    loss_gap: float | None = None
    mu: float | None = None
    """Polyak-Lojasiewicz constant of the general loss (forms B, D); None = L / condition_number."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("loss_gap", "mu") and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"BoundConstants.{f.name}: got {value!r}; need a finite number")
            if value < 0 or (f.name == "L" and value <= 0):
                need = "> 0" if f.name == "L" else ">= 0"
                raise ConfigError(
                    f"BoundConstants.{f.name}: got {value!r}; need {need}",
                    hint="estimate the constants with edgelearn.planning.estimate_constants",
                )
            object.__setattr__(self, f.name, float(value))

    def to_dict(self) -> dict[str, float | None]:
        """Plain dict (JSON-ready), e.g. to cache the estimate in a run directory."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, float | None]) -> BoundConstants:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(data) - known)
        if extra:
            raise ConfigError(f"BoundConstants: unknown keys {extra}", hint=f"use only {sorted(known)}")
        return cls(**data)  # type: ignore[arg-type]


@runtime_checkable
class Bound(Protocol):
    """A convergence bound used as the planning objective.

    ``value`` must be affine and non-decreasing in ``inv_batch_pre_sum`` and ``inv_batch_ft_sum`` for fixed
    (M, N), and return ``math.inf`` where it is undefined (e.g. M = N = 0).
    """

    name: str

    def value(
        self,
        M: int,
        N: int,
        inv_batch_pre_sum: float,
        inv_batch_ft_sum: float,
        constants: BoundConstants,
        eta_pre: float,
        eta_ft: float,
    ) -> float:
        """The bound for M pre-training and N fine-tuning rounds with the given inverse-batch sums."""
        ...


@dataclass(frozen=True)
class AffineParts:
    """For fixed (M, N): bound = offset + weight_pre * S_pre + weight_ft * S_ft (weights >= 0)."""

    offset: float
    weight_pre: float
    weight_ft: float

    def value(self, inv_batch_pre_sum: float, inv_batch_ft_sum: float) -> float:
        """Evaluate the affine form."""
        return self.offset + self.weight_pre * inv_batch_pre_sum + self.weight_ft * inv_batch_ft_sum


def affine_parts(
    bound: Bound, M: int, N: int, constants: BoundConstants, eta_pre: float, eta_ft: float
) -> AffineParts:
    """Split ``bound`` at fixed (M, N) into offset and the weights of the two inverse-batch sums.

    Evaluates the bound at (0, 0), (1, 0), (0, 1) and checks affinity at a fourth point; a bound that is not
    affine or decreases with an inverse-batch sum raises ConfigError (the planner's inner problem would not
    be our exact convex program, ``convex.py``, otherwise).
    """
    offset = bound.value(M, N, 0.0, 0.0, constants, eta_pre, eta_ft)
    if not math.isfinite(offset):
        return AffineParts(math.inf, 0.0, 0.0)
    w_pre = bound.value(M, N, 1.0, 0.0, constants, eta_pre, eta_ft) - offset
    w_ft = bound.value(M, N, 0.0, 1.0, constants, eta_pre, eta_ft) - offset
    name = getattr(bound, "name", type(bound).__name__)
    if w_pre < 0 or w_ft < 0:
        raise ConfigError(
            f"bound {name!r}: decreases with an inverse-batch sum at M={M}, N={N} "
            f"(weights {w_pre:.3g}, {w_ft:.3g})",
            hint="a planning bound must not reward smaller batches",
        )
    sp, sf = AFFINE_CHECK_POINT
    expected = offset + w_pre * sp + w_ft * sf
    got = bound.value(M, N, sp, sf, constants, eta_pre, eta_ft)
    if not math.isclose(got, expected, rel_tol=AFFINE_CHECK_RTOL, abs_tol=AFFINE_CHECK_RTOL * abs(offset)):
        raise ConfigError(
            f"bound {name!r} is not affine in the inverse-batch sums at M={M}, N={N} "
            f"(value {got:.6g} vs affine prediction {expected:.6g})",
            hint="write the bound as offset(M, N) + a(M, N) * S_pre + b(M, N) * S_ft",
        )
    return AffineParts(offset, w_pre, w_ft)


def _check_condition_number(form: str, value: float) -> None:
    if not math.isfinite(value) or value < 1:
        raise ConfigError(f"bound {form}: condition_number={value!r}; need a finite number >= 1 (mu <= L)")


def _pl_mu(c: BoundConstants, condition_number: float) -> float:
    """The PL constant: the measured ``c.mu`` when there is one, else L / condition_number."""
    return c.mu if c.mu else c.L / condition_number


def _pl_steps(
    c: BoundConstants, mu: float, steps: int, eta: float, sigma2: float, inv_batch_sum: float, start: float
) -> tuple[float, float]:
    """``steps`` SGD steps contracting a loss gap under PL, with equal batches: (gap, rho^steps), gap =
    rho^steps start + (1 - rho^steps) L eta sigma^2 S / (2 mu steps), rho = 1 - mu eta (forms B, D, E)."""
    decay = min(max(1.0 - mu * eta, 0.0), 1.0) ** steps
    noise = (1.0 - decay) * c.L * eta * sigma2 * inv_batch_sum / (2.0 * mu * steps)
    return decay * start + noise, decay


def _loss_gap(c: BoundConstants, form: str) -> float:
    """``c.loss_gap`` (eps = sup |F - F~|), which forms C and D need; a ConfigError when it is not set."""
    if c.loss_gap is None:
        raise ConfigError(
            f"bound {form} needs BoundConstants.loss_gap (sup |F - F~|), which is not set",
            hint="estimate it with estimate_constants or pass loss_gap=... to BoundConstants",
        )
    return c.loss_gap


def _iterate_average(
    c: BoundConstants, M: int, N: int, head: float, eta_pre: float, eta_ft: float, s_pre: float, s_ft: float
) -> float:
    """(head + L eta~^2 sigma~^2 S_pre + L eta^2 sigma^2 S_ft) / (M eta~ + N eta): the step-weighted average
    of forms A and C, which differ only in ``head``; inf when no step is taken."""
    denom = M * eta_pre + N * eta_ft
    if denom <= 0:
        return math.inf
    noise = c.L * eta_pre**2 * c.sigma2_general * s_pre + c.L * eta_ft**2 * c.sigma2_task * s_ft
    return (head + noise) / denom


def _finetune_average(c: BoundConstants, M: int, N: int, gap: float, eta_ft: float, s_ft: float) -> float:
    """Forms B and D from the task-loss gap after pre-training: (2 gap + L eta^2 sigma^2 S_ft) / (N eta) for
    N >= 1, else the smoothness bound 2 L gap at the pre-trained model (inf without any round)."""
    if N <= 0:
        return 2.0 * c.L * gap if M > 0 else math.inf
    return (2.0 * gap + c.L * eta_ft**2 * c.sigma2_task * s_ft) / (N * eta_ft)


@dataclass(frozen=True)
class _PLBound:
    """Base of the forms that assume a PL condition (B, D, E): mu is ``constants.mu`` when measured, else
    L / condition_number."""

    condition_number: float = CONDITION_NUMBER_DEFAULT
    name: str = "PL"

    def __post_init__(self) -> None:
        _check_condition_number(self.name, self.condition_number)

    def mu(self, c: BoundConstants) -> float:
        """The PL constant used with ``c``."""
        return _pl_mu(c, self.condition_number)


@dataclass(frozen=True)
class StepWeightedBound:
    """Form A (our derivation, the default): step-weighted average of ||grad F||^2 over all M + N rounds,

    Phi = (2 Delta + M eta~ delta^2 + L eta~^2 sigma~^2 S_pre + L eta^2 sigma^2 S_ft) / (M eta~ + N eta).
    With N = 0 (pre-training only) it bounds the average over the M pre-training iterates. Derived for
    eta~, eta <= 1/L from a lower-bounded loss, L-smoothness, bounded per-sample gradient variance and
    gradients Lipschitz in the data (delta = L_xi W1(general, task) bounds ||grad F - grad F~||); the
    derivation telescopes the per-step descent over both stages.
    """

    name: str = "A"

    def value(
        self,
        M: int,
        N: int,
        inv_batch_pre_sum: float,
        inv_batch_ft_sum: float,
        constants: BoundConstants,
        eta_pre: float,
        eta_ft: float,
    ) -> float:
        """Phi as documented on the class."""
        c = constants
        head = 2.0 * c.Delta + M * eta_pre * c.delta**2
        return _iterate_average(c, M, N, head, eta_pre, eta_ft, inv_batch_pre_sum, inv_batch_ft_sum)


@dataclass(frozen=True)
class FineTuneGapBound(_PLBound):
    """Form B (our alternative to A): average of ||grad F||^2 over the N fine-tuning rounds only,
    pre-training entering through the gap F(w~^(M)) - F*, which shrinks under a PL condition.

    With mu = L / condition_number and rho = 1 - mu eta~, the pre-training recursion
    gap_{m+1} <= rho gap_m + eta~ delta^2 / 2 + L eta~^2 sigma~^2 / (2 D~) gives
    gap_M = rho^M Delta + (1 - rho^M) / (mu eta~) * (eta~ delta^2 / 2 + L eta~^2 sigma~^2 S_pre / (2 M))
    (exact for equal pre-training batches, which the planner always uses), and
    Phi_B = (2 gap_M + L eta^2 sigma^2 S_ft) / (N eta) for N >= 1; for N = 0 it is 2 L gap_M, the
    smoothness bound ||grad F(w)||^2 <= 2 L (F(w) - F*) at the pre-trained model.
    """

    name: str = "B"

    def value(
        self,
        M: int,
        N: int,
        inv_batch_pre_sum: float,
        inv_batch_ft_sum: float,
        constants: BoundConstants,
        eta_pre: float,
        eta_ft: float,
    ) -> float:
        """Phi_B as documented on the class."""
        c = constants
        gap = c.Delta
        if M > 0:
            mu = self.mu(c)
            gap, decay = _pl_steps(c, mu, M, eta_pre, c.sigma2_general, inv_batch_pre_sum, c.Delta)
            gap += (1.0 - decay) * c.delta**2 / (2.0 * mu)  # the shift's drift, (1 - rho^M) delta^2 / (2 mu)
        return _finetune_average(c, M, N, gap, eta_ft, inv_batch_ft_sum)


@dataclass(frozen=True)
class StageWiseBound:
    """Form C (our alternative to A): stage-wise gradients, ||grad F~||^2 while pre-training and
    ||grad F||^2 while fine-tuning, joined through eps = sup |F - F~| (= G W1):

    Phi_C = (2 Delta + 4 eps [M >= 1] + L eta~^2 sigma~^2 S_pre + L eta^2 sigma^2 S_ft) / (M eta~ + N eta).
    The shift enters once (two loss switches at w~^(0) and w~^(M)), not scaled by M. Needs
    ``BoundConstants.loss_gap``.
    """

    name: str = "C"

    def value(
        self,
        M: int,
        N: int,
        inv_batch_pre_sum: float,
        inv_batch_ft_sum: float,
        constants: BoundConstants,
        eta_pre: float,
        eta_ft: float,
    ) -> float:
        """Phi_C as documented on the class."""
        c = constants
        eps = _loss_gap(c, "C")
        head = 2.0 * c.Delta + (4.0 * eps if M > 0 else 0.0)
        return _iterate_average(c, M, N, head, eta_pre, eta_ft, inv_batch_pre_sum, inv_batch_ft_sum)


@dataclass(frozen=True)
class WarmStartBound(_PLBound):
    """Form D (our derivation, not the paper's): pre-training as a warm start for fine-tuning.

    Pre-training is SGD on the general loss F~; under a PL condition on F~ (mu = L / condition_number,
    rho = 1 - mu eta~) its gap shrinks geometrically to a variance floor, and the shift costs the task
    loss at most twice the loss gap eps = sup |F - F~| (F <= F~ + eps pointwise and F* >= F~* - eps):

    gap_M = rho^M (Delta + 2 eps) + (1 - rho^M) L eta~ sigma~^2 S_pre / (2 mu M) + 2 eps   (M >= 1),
    gap_0 = Delta, and Phi_D = (2 gap_M + L eta^2 sigma^2 S_ft) / (N eta) for N >= 1, 2 L gap_M for N = 0.

    mu is ``constants.mu`` when measured (see planning.constants.pl_constant), else L / condition_number.
    Unlike A (the shift charged on every pre-training step) and C (charged once, but pre-training rounds
    count as progress on the task), D lets pre-training help only as far as the general and task losses
    agree: the larger the loss gap, the less pre-training pays, and none does once 4 eps reaches ~Delta.
    Needs ``BoundConstants.loss_gap``.
    """

    name: str = "D"

    def value(
        self,
        M: int,
        N: int,
        inv_batch_pre_sum: float,
        inv_batch_ft_sum: float,
        constants: BoundConstants,
        eta_pre: float,
        eta_ft: float,
    ) -> float:
        """Phi_D as documented on the class."""
        c = constants
        eps = _loss_gap(c, "D")
        gap = c.Delta
        if M > 0:
            mu = self.mu(c)
            gap, _ = _pl_steps(c, mu, M, eta_pre, c.sigma2_general, inv_batch_pre_sum, c.Delta + 2.0 * eps)
            gap += 2.0 * eps
        return _finetune_average(c, M, N, gap, eta_ft, inv_batch_ft_sum)


@dataclass(frozen=True)
class LastIterateBound(_PLBound):
    """Form E (our derivation, a last-iterate guarantee the paper does not give): the expected task-loss gap
    of the delivered model, E F(w^(N)) - F*, under a PL condition on both losses.

    Pre-training gives D's gap_M; each fine-tuning round contracts it, gap_{n+1} <= rho gap_n +
    L eta^2 sigma^2 / (2 B_n) with rho = 1 - mu eta, so with equal rounds (what the planner uses)
    Phi_E = rho^N gap_M + (1 - rho^N) L eta sigma^2 S_ft / (2 mu N), and Phi_E = gap_M for N = 0.
    It scores the model a run delivers rather than the average over its iterates (forms A-D), which is
    what a final accuracy reflects. mu is ``constants.mu`` when measured, else L / condition_number.
    """

    name: str = "E"

    def value(
        self,
        M: int,
        N: int,
        inv_batch_pre_sum: float,
        inv_batch_ft_sum: float,
        constants: BoundConstants,
        eta_pre: float,
        eta_ft: float,
    ) -> float:
        """Phi_E as documented on the class."""
        c = constants
        warm = WarmStartBound(self.condition_number)
        if M + N == 0:
            return math.inf
        # gap_M of form D: its N = 0 value is 2 L gap_M (M >= 1); gap_0 = Delta
        gap = warm.value(M, 0, inv_batch_pre_sum, 0.0, c, eta_pre, eta_ft) / (2.0 * c.L) if M > 0 else c.Delta
        if N <= 0:
            return gap
        mu = self.mu(c)
        return _pl_steps(c, mu, N, eta_ft, c.sigma2_task, inv_batch_ft_sum, gap)[0]


BOUND_FORMS: dict[str, type] = {
    "A": StepWeightedBound,
    "B": FineTuneGapBound,
    "C": StageWiseBound,
    "D": WarmStartBound,
    "E": LastIterateBound,
}
"""Built-in bound forms by name."""


def get_bound(bound: str | Bound) -> Bound:
    """A bound object from a form name (a key of BOUND_FORMS) or a user object implementing :class:`Bound`."""
    if isinstance(bound, str):
        key = bound.strip().upper()
        if key not in BOUND_FORMS:
            raise ConfigError(f"bound: unknown form {bound!r}", hint=f"use one of {sorted(BOUND_FORMS)}")
        return BOUND_FORMS[key]()
    if not isinstance(bound, Bound):
        raise ConfigError(
            f"bound: {type(bound).__name__} does not implement the Bound protocol",
            hint="give it a name attribute and a value(M, N, S_pre, S_ft, constants, eta_pre, eta_ft) method",
        )
    return bound
