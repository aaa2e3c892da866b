"""PriceSource fake: a scripted exchange quote with failure knobs and a call record."""

import asyncio

from app.domain.errors import PriceUnavailableError


class FakePriceSource:
    """Answers `price_micro` (micro-USD per BTC).

    Knobs: `unavailable` (every call raises PriceUnavailableError), `fail_next` (that many calls raise), `hang`
    (the call never answers, for timeout tests). `calls` counts every call.
    """

    def __init__(self, name: str = "fake", price_micro: int = 100_000 * 10**6) -> None:
        self._name = name
        self.price_micro = price_micro
        self.unavailable = False
        self.fail_next = 0
        self.hang = False
        self.calls = 0

    @property
    def name(self) -> str:
        return self._name

    async def btc_usd_micro(self) -> int:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.unavailable:
            msg = f"{self._name} is unavailable"
            raise PriceUnavailableError(msg)
        if self.fail_next > 0:
            self.fail_next -= 1
            msg = f"{self._name} failed"
            raise PriceUnavailableError(msg)
        return self.price_micro
