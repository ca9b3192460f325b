"""Forward-error bounds of float32 computations: run the computation on (value, error) pairs.

A `Bounded` holds the exact result of a computation (computed in float64) and
a bound on how far any float32 implementation of the same formula may land
from it, whatever its summation order, tree or fusing. Each operation adds
the errors its inputs carry, amplified by its own derivative over the inputs'
error intervals, and its own rounding (Higham, "Accuracy and Stability of
Numerical Algorithms", 2nd ed., ch. 2-3): |fl(a op b) - a op b| <= u |a op b|,
and a dot product or sum of n terms, in any order or tree, is off by at most
gamma(n) times the sum of the terms' magnitudes, gamma(n) = n u / (1 - n u).
This is midpoint-radius interval arithmetic: sound, not a guess, and tight
where the computation is well conditioned.
"""

from dataclasses import dataclass

import torch

# float32's unit roundoff (round to nearest). The float64 arithmetic that
# computes values and bounds rounds too, by at most 2^-53 of the same terms for
# each operation: 2^-48 more per float32 rounding covers 32 of those.
U = 2.0**-24 + 2.0**-48
# torch's float32 CPU tanh (SLEEF's 1.0-ulp kernel, the same for the oracle and
# Keras, which calls torch.tanh) is within one ulp, and one ulp of t is at most 2u|t|.
TANH_ROUNDING = 2 * U


def gamma(n):
    return n * U / (1 - n * U)


@dataclass(frozen=True)
class Bounded:
    value: torch.Tensor  # float64: the exact result
    error: torch.Tensor  # a float32 implementation computes something within value ± error

    @property
    def magnitude(self):
        """A bound on |what a float32 implementation holds|."""
        return self.value.abs() + self.error

    @property
    def T(self):
        return Bounded(self.value.T, self.error.T)

    def admits(self, actual):
        """Elementwise: is `actual` within the bound?"""
        return (actual.double() - self.value).abs() <= self.error


def exact(tensor):
    """A value every implementation holds exactly (dyadic data and weights)."""
    value = tensor.double()
    return Bounded(value, torch.zeros_like(value))


def add(a, b):
    value = a.value + b.value
    return Bounded(value, a.error + b.error + U * (a.magnitude + b.magnitude))


def sub(a, b):
    return add(a, Bounded(-b.value, b.error))


def mul(a, b):
    """Elementwise product: each input's error scaled by the other's size, plus one rounding."""
    value = a.value * b.value
    propagated = a.value.abs() * b.error + a.error * b.value.abs() + a.error * b.error
    return Bounded(value, propagated + U * a.magnitude * b.magnitude)


def scale(a, factor, roundings):
    """a times a constant that reaches the implementation through `roundings` rounded operations."""
    return Bounded(a.value * factor, abs(factor) * (a.error + gamma(roundings) * a.magnitude))


def matmul(a, b):
    """a @ b: a dot product of a.shape[-1] terms per entry, in any order."""
    value = a.value @ b.value
    propagated = a.value.abs() @ b.error + a.error @ b.value.abs() + a.error @ b.error
    return Bounded(value, propagated + gamma(a.value.shape[-1]) * (a.magnitude @ b.magnitude))


def column_sums(a):
    """Sum over dim 0 (a bias gradient): n terms, n - 1 additions per entry."""
    return Bounded(a.value.sum(0), a.error.sum(0) + gamma(a.value.shape[0] - 1) * a.magnitude.sum(0))


def mean(a, roundings):
    """Mean of every entry: n - 1 additions, and a division that reaches the
    result through `roundings` rounded operations."""
    n = a.value.numel()
    return Bounded(a.value.mean(), (a.error.sum() + gamma(n - 1 + roundings) * a.magnitude.sum()) / n)


def relu(a):
    """Exact and 1-Lipschitz: the error passes through, never grows."""
    return Bounded(torch.relu(a.value), a.error)


def relu_derivative(a):
    """1 where the input is surely positive, 0 where surely negative; where its
    interval touches 0 an implementation may take either (value 0.5 ± 0.5)."""
    certain = a.value.abs() > a.error
    value = torch.where(certain, (a.value > 0).double(), torch.full_like(a.value, 0.5))
    return Bounded(value, torch.where(certain, torch.zeros_like(a.value), torch.full_like(a.value, 0.5)))


def tanh(a):
    """tanh' = sech^2 is largest at the point of the input's interval nearest 0."""
    value = torch.tanh(a.value)
    nearest_zero = torch.clamp(torch.zeros_like(a.value), a.value - a.error, a.value + a.error)
    propagated = a.error / torch.cosh(nearest_zero) ** 2
    return Bounded(value, propagated + TANH_ROUNDING * (value.abs() + propagated))


def tanh_derivative(t):
    """1 - t^2 from the layer's output t, as autograd computes it."""
    return sub(exact(torch.ones_like(t.value)), mul(t, t))


def identity_derivative(a):
    return exact(torch.ones_like(a.value))


def total(a):
    """Sum of every entry: n - 1 additions, in any order."""
    return Bounded(a.value.sum(), a.error.sum() + gamma(a.value.numel() - 1) * a.magnitude.sum())


def sqrt(a):
    """Square root of a non-negative value: over the input's interval it moves
    most at the interval's lower end (sqrt is concave), then one rounding."""
    value = torch.sqrt(a.value)
    lowest = torch.clamp(a.value - a.error, min=0)
    propagated = torch.maximum(torch.sqrt(a.value + a.error) - value, value - torch.sqrt(lowest))
    return Bounded(value, propagated + U * (value + propagated))


def at_least(a, floor):
    """max(a, floor) for a constant floor: exact and 1-Lipschitz, the error passes through."""
    return Bounded(torch.clamp(a.value, min=floor), a.error)


def div(a, b, floor=None):
    """a / b for b surely positive (at least `floor`, when the divisor is a
    max(..., floor)): |â/b̂ - a/b| <= (|â - a| + |a/b| |b̂ - b|) / b̂, then one rounding."""
    lowest = b.value - b.error if floor is None else torch.clamp(b.value - b.error, min=floor)
    assert bool((lowest > 0).all()), "the divisor's interval must lie above 0"
    value = a.value / b.value
    propagated = (a.error + value.abs() * b.error) / lowest
    return Bounded(value, propagated + U * (value.abs() + propagated))
