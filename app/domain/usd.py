"""US dollars as integer pUSD (10^-12 USD), parsed exactly from decimal text (SPEC §4.1)."""

from fractions import Fraction
from typing import Final

PUSD_PER_USD: Final = 10**12
MICRO_USD_PER_USD: Final = 10**6


def parse_usd(text: str | int | float) -> int:
    """Exact pUSD for a non-negative USD amount given as decimal text ("0.00000015", "1e-7").

    Precision beyond 12 decimals rounds up (prices are charges). Floats are read through their shortest decimal
    repr, so 1.5e-07 means exactly 0.00000015. Raises ValueError for negative, non-finite or non-numeric input.
    """
    raw = repr(text) if isinstance(text, float) else str(text).strip()
    try:
        value = Fraction(raw)
    except (ValueError, ZeroDivisionError):
        msg = f"not a USD amount: {text!r}"
        raise ValueError(msg) from None
    if value < 0:
        msg = f"negative USD amount: {text!r}"
        raise ValueError(msg)
    scaled = value * PUSD_PER_USD
    return -(-scaled.numerator // scaled.denominator)


def format_pusd(pusd: int, decimals: int = 12) -> str:
    """A pUSD amount as a plain USD decimal string with at most `decimals` places, trailing zeros removed.

    Rounds up when `decimals` < 12 (shown prices never understate). `format_pusd(150_000)` == "0.00000015".
    """
    if pusd < 0 or not 0 <= decimals <= 12:  # noqa: PLR2004 - pUSD has 12 decimals
        msg = f"cannot format {pusd!r} with {decimals!r} decimals"
        raise ValueError(msg)
    step = 10 ** (12 - decimals)
    units = -(-pusd // step)
    whole, frac = divmod(units, 10**decimals)
    if decimals == 0:
        return str(whole)
    text = f"{whole}.{frac:0{decimals}d}".rstrip("0").rstrip(".")
    return text or "0"
