"""Kubernetes resource quantities (k8s.io/apimachinery/pkg/api/resource): the grammar and their value.

    <quantity> ::= <signedNumber><suffix>;  suffix: binary Ki Mi Gi Ti Pi Ei | decimal n u m "" k M G T P E |
                   a decimal exponent e<n> / E<n>
"""
from __future__ import annotations

import re
from typing import Any

QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
DECIMAL = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def is_quantity(value: Any) -> bool:
    """A JSON number, or a string in the quantity grammar."""
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) or (isinstance(value, str) and bool(QUANTITY.match(value)))


def parse_quantity(value: Any) -> float:
    """The value of a quantity: bytes for memory (`128Mi` → 134217728), cores for cpu (`100m` → 0.1)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number, suffix = float(match.group(1)), match.group(2) or ""
    if suffix in BINARY:
        return number * BINARY[suffix]
    if suffix in DECIMAL:
        return number * DECIMAL[suffix]
    return number * 10 ** int(suffix[1:])
