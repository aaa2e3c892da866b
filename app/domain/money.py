"""Money: integer millisatoshis and the integer rounding rules."""

from dataclasses import dataclass

MSAT_PER_SAT = 1000


def ceil_div(numerator: int, denominator: int) -> int:
    """Integer division rounding towards +infinity (charges round up)."""
    if denominator <= 0:
        msg = f"denominator must be positive: {denominator!r}"
        raise ValueError(msg)
    return -(-numerator // denominator)


def floor_div(numerator: int, denominator: int) -> int:
    """Integer division rounding towards -infinity (payouts and refunds round down)."""
    if denominator <= 0:
        msg = f"denominator must be positive: {denominator!r}"
        raise ValueError(msg)
    return numerator // denominator


@dataclass(frozen=True, slots=True, order=True)
class Msat:
    """A non-negative amount of millisatoshis."""

    value: int

    def __post_init__(self) -> None:
        if type(self.value) is not int or self.value < 0:
            msg = f"invalid msat amount: {self.value!r}"
            raise ValueError(msg)

    @classmethod
    def zero(cls) -> "Msat":
        return cls(0)

    @classmethod
    def from_sat(cls, sats: int) -> "Msat":
        return cls(sats * MSAT_PER_SAT)

    def __add__(self, other: "Msat") -> "Msat":
        return Msat(self.value + other.value)

    def __sub__(self, other: "Msat") -> "Msat":
        """Subtract; raises ValueError when the result would be negative."""
        return Msat(self.value - other.value)

    def saturating_sub(self, other: "Msat") -> "Msat":
        return Msat(max(0, self.value - other.value))

    def sats_rounded_down(self) -> int:
        """Whole sats a payout or refund may pay (payouts round down)."""
        return self.value // MSAT_PER_SAT

    def sats_rounded_up(self) -> int:
        """Whole sats a charge or a payment request asks for (charges round up)."""
        return ceil_div(self.value, MSAT_PER_SAT)

    def __bool__(self) -> bool:
        return self.value != 0
