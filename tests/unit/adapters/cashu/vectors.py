"""Loads the NUT test vectors kept as JSON data next to the tests."""

import json
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


@cache
def nut_vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HERE / "nut_vectors.json").read_text())
    return data


@cache
def nut02_vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HERE / "nut02_vectors.json").read_text())
    return data


def keys_of(name: str) -> dict[int, str]:
    return {int(amount): key for amount, key in nut02_vectors()[name].items()}


@cache
def nutshell_tokens() -> dict[str, Any]:
    """Tokens made by nutshell 0.20.2, with the keyset that signed them."""
    data: dict[str, Any] = json.loads((HERE / "nutshell_tokens.json").read_text())
    return data
