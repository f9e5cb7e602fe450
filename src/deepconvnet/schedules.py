"""Learning-rate schedules: the rate to use for each epoch of a run.

Chapter 8.1.2 of the book lists learning-rate decay among the tricks of the best MNIST entries.
A schedule is a pure function of ``(epoch, base_lr, total_epochs)``, so a resumed run gets the same
rates as an uninterrupted one and nothing about a schedule needs to be saved but its spec.

Specs (``parse_schedule``)::

    constant            base_lr every epoch
    exp:G               base_lr * G**epoch             (e.g. exp:0.95)
    step:N:F            base_lr * F**(epoch // N)      (e.g. step:10:0.5: halve every 10 epochs)
    cosine[:FLOOR]      cosine from base_lr down to FLOOR*base_lr (default 0) over the run
    warmup:W[+REST]     linear warm-up over W epochs, then REST (default constant) over the
                        remaining epochs, e.g. warmup:2+cosine

Epochs are 0-based: ``lr(0, ...)`` is the rate of the first epoch. The formulas accept a
fractional epoch too (``epoch + step / steps_per_epoch``) for a trainer that updates every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deepconvnet.errors import DeepConvNetError


class Schedule:
    """The learning rate for an epoch; ``spec`` is the canonical text ``parse_schedule`` reads."""

    @property
    def spec(self) -> str:
        raise NotImplementedError

    def lr(self, epoch: float, base_lr: float, total_epochs: int) -> float:
        _check_args(epoch, total_epochs)
        return float(self._lr(epoch, base_lr, total_epochs))

    def _lr(self, epoch: float, base_lr: float, total_epochs: int) -> float:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.spec


@dataclass(frozen=True)
class Constant(Schedule):
    """The same rate every epoch (the book's setting)."""

    @property
    def spec(self) -> str:
        return "constant"

    def _lr(self, epoch: float, base_lr: float, total_epochs: int) -> float:
        return base_lr


@dataclass(frozen=True)
class Exponential(Schedule):
    """Multiply the rate by ``gamma`` every epoch."""

    gamma: float

    @property
    def spec(self) -> str:
        return f"exp:{number_text(self.gamma)}"

    def _lr(self, epoch: float, base_lr: float, total_epochs: int) -> float:
        return base_lr * self.gamma**epoch


@dataclass(frozen=True)
class Step(Schedule):
    """Multiply the rate by ``factor`` once every ``every`` epochs."""

    every: int
    factor: float

    @property
    def spec(self) -> str:
        return f"step:{self.every}:{number_text(self.factor)}"

    def _lr(self, epoch: float, base_lr: float, total_epochs: int) -> float:
        return base_lr * self.factor ** math.floor(epoch / self.every)


@dataclass(frozen=True)
class Cosine(Schedule):
    """Half a cosine from ``base_lr`` to ``floor * base_lr``, reached at the end of the run.

    ``lr(e) = f + (1 - f) * (1 + cos(pi * e / T)) / 2`` times ``base_lr``: the last epoch
    (``e = T - 1``) still learns a little; the floor is where the run would go next.
    """

    floor: float = 0.0

    @property
    def spec(self) -> str:
        return "cosine" if self.floor == 0 else f"cosine:{number_text(self.floor)}"

    def _lr(self, epoch: float, base_lr: float, total_epochs: int) -> float:
        progress = min(epoch / total_epochs, 1.0)
        return base_lr * (self.floor + (1 - self.floor) * (1 + math.cos(math.pi * progress)) / 2)


@dataclass(frozen=True)
class Warmup(Schedule):
    """Linear warm-up for ``epochs`` epochs, then ``then`` over the epochs that remain.

    Epoch ``e < W`` uses ``base_lr * (e + 1) / (W + 1)``: it starts low (never 0, which would
    waste an epoch) and climbs so that epoch ``W``, the first after warm-up, uses ``base_lr``.
    ``then`` sees epochs counted from the end of warm-up and a run of ``T - W`` epochs.
    """

    epochs: int
    then: Schedule = Constant()

    @property
    def spec(self) -> str:
        rest = "" if isinstance(self.then, Constant) else f"+{self.then.spec}"
        return f"warmup:{self.epochs}{rest}"

    def _lr(self, epoch: float, base_lr: float, total_epochs: int) -> float:
        if epoch < self.epochs:
            return base_lr * (epoch + 1) / (self.epochs + 1)
        return self.then._lr(epoch - self.epochs, base_lr, max(total_epochs - self.epochs, 1))


def parse_schedule(spec: str | None) -> Schedule:
    """Parse a ``--lr-schedule`` spec; ``None`` or ``""`` mean ``constant``."""
    text = (spec or "constant").strip().lower()
    head, plus, rest = text.partition("+")
    if head.startswith("warmup"):
        warmup_epochs = _fields(head, "warmup", 1, text)[0]
        if plus and (not rest or rest.startswith("warmup")):
            usage = "expected warmup:W+SCHEDULE, e.g. warmup:2+cosine"
            raise DeepConvNetError(f"lr schedule {text!r}: {usage}")
        return Warmup(_positive_int(warmup_epochs, text), _parse_one(rest) if plus else Constant())
    if plus:
        raise DeepConvNetError(f"lr schedule {text!r}: only warmup:W may precede '+'")
    return _parse_one(text)


def _parse_one(text: str) -> Schedule:
    name = text.split(":", 1)[0]
    if name == "constant":
        _fields(text, "constant", 0, text)
        return Constant()
    if name == "exp":
        (gamma,) = _fields(text, "exp", 1, text)
        return Exponential(_fraction(gamma, text, "the factor per epoch", allow_one=True))
    if name == "step":
        every, factor = _fields(text, "step", 2, text)
        return Step(_positive_int(every, text), _fraction(factor, text, "the factor", True))
    if name == "cosine":
        parts = text.split(":")
        if len(parts) > 2:
            raise DeepConvNetError(f"lr schedule {text!r}: expected cosine or cosine:FLOOR")
        floor = _fraction(parts[1], text, "the floor", allow_one=False) if len(parts) == 2 else 0.0
        return Cosine(floor)
    raise DeepConvNetError(
        f"lr schedule {text!r}: unknown (known: constant, exp:G, step:N:F, cosine[:FLOOR], "
        "warmup:W[+SCHEDULE])"
    )


def _fields(text: str, name: str, count: int, spec: str) -> list[str]:
    parts = text.split(":")
    if parts[0] != name or len(parts) != count + 1 or not all(parts[1:]):
        usage = {"constant": "constant", "exp": "exp:G", "step": "step:N:F", "warmup": "warmup:W"}
        raise DeepConvNetError(f"lr schedule {spec!r}: expected {usage[name]}")
    return parts[1:]


def _positive_int(text: str, spec: str) -> int:
    value = whole_number(text)
    if value is None or value < 1:
        raise DeepConvNetError(f"lr schedule {spec!r}: {text!r} is not a whole number >= 1")
    return value


def _fraction(text: str, spec: str, what: str, allow_one: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DeepConvNetError(f"lr schedule {spec!r}: {what} {text!r} is not a number") from None
    ok = 0 < value <= 1 if allow_one else 0 <= value < 1
    if not ok:
        bounds = "in (0, 1]" if allow_one else "in [0, 1)"
        raise DeepConvNetError(f"lr schedule {spec!r}: {what} {text!r} must be {bounds}")
    return value


def _check_args(epoch: float, total_epochs: int) -> None:
    if epoch < 0 or total_epochs < 1:
        raise ValueError(f"need epoch >= 0 and total_epochs >= 1, got {epoch} and {total_epochs}")


def whole_number(text: str) -> int | None:
    """The int that ``text`` spells in ASCII digits, else None.

    ``str.isdigit`` alone also accepts digits such as ``"²"`` that ``int()`` rejects, which would
    turn a typo in a spec into an internal error instead of a spec error. Shared with the
    augmentation specs (data may import from the engine, not the other way round).
    """
    return int(text) if text.isascii() and text.isdigit() else None


def number_text(value: float) -> str:
    """The shortest text that reads back as ``value`` (``15``, not ``15.0``; ``0.15``).

    Canonical spec text is built with it, here and in the augmentation specs, so that a spec
    printed back reads the same as the one typed.
    """
    return str(int(value)) if float(value).is_integer() else repr(float(value))
