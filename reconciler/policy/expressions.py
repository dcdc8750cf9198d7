"""CEL for policy conditions, as Kubernetes ValidatingAdmissionPolicy writes it.

Expressions are compiled once, when policies load, so a syntax error is reported
there with the policy and key that hold it; at run time every failure of the
runtime (missing field, wrong type, a function's error) becomes one
ExpressionError, never a traceback.

The runtime (common-expression-language, cel-rust underneath) implements core
CEL; the cel-go string and list extensions come from its `stdlib`, and the
Kubernetes IP/CIDR library is registered here under the Kubernetes names. The
runtime has no custom types, so IPs and CIDRs are carried as strings: `cidr(s)`
validates and returns its text, and `containsIP` parses both sides.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cel
from cel.stdlib import STDLIB_FUNCTIONS

from reconciler.errors import ReconcilerError

# What the runtime raises for a failed evaluation (KeyError for a missing field,
# TypeError for "no such overload", RuntimeError when a function fails, ...).
_RUNTIME_ERRORS = (ArithmeticError, LookupError, RuntimeError, TypeError, ValueError)

# The runtime logs a warning for every function that raises; such failures are
# already reported as violations naming policy and object, so the bare warning
# would only repeat them without that context.
logging.getLogger("cel").setLevel(logging.ERROR)


class ExpressionError(ReconcilerError):
    """An expression that does not compile, or failed on one object."""


@dataclass(frozen=True)
class Expression:
    """A compiled expression; `text` is kept for messages."""

    text: str
    program: cel.Program = field(repr=False, compare=False)


def compile_expression(text: str) -> Expression:
    try:
        return Expression(text, cel.compile(text))
    except ValueError as exc:
        # The runtime's message quotes the expression and points at the error.
        raise ExpressionError(f"not valid CEL: {_first_line(exc)}") from None


def run(expression: Expression, context: cel.Context) -> Any:
    try:
        return expression.program.execute(context)
    except _RUNTIME_ERRORS as exc:
        raise ExpressionError(_describe(exc)) from None


def run_bool(expression: Expression, context: cel.Context) -> bool:
    result = run(expression, context)
    if not isinstance(result, bool):
        raise ExpressionError(f"expected a bool, got {type(result).__name__}")
    return result


def new_context(
    variables: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]]
) -> cel.Context:
    """A context with the standard, extension and Kubernetes network functions, plus
    `functions` (which win over the others of the same name)."""
    return cel.Context(
        variables=dict(variables),
        functions={**STDLIB_FUNCTIONS, **NETWORK_FUNCTIONS, **functions},
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0] if exc.args else exc}"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- Kubernetes CEL IP/CIDR library (k8s.io/apiserver/pkg/cel/library) ---


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(text)
    # Kubernetes refuses IPv4-mapped IPv6 (::ffff:1.2.3.4): it hides which family is meant.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        raise ValueError(f"IPv4-mapped IPv6 address {text!r} is not accepted")
    return address


def _parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    # Python would read a bare address as a /32; Kubernetes requires the prefix length.
    if "/" not in text:
        raise ValueError(f"{text!r} is not a CIDR: no prefix length")
    # strict=False: like Kubernetes, '10.0.0.5/24' is a valid CIDR (host bits kept).
    return ipaddress.ip_network(text, strict=False)


def _ip(text: str) -> str:
    return str(_parse_ip(text))


def _is_ip(text: str) -> bool:
    try:
        _parse_ip(text)
    except ValueError:
        return False
    return True


def _cidr(text: str) -> str:
    _parse_cidr(text)
    return text


def _is_cidr(text: str) -> bool:
    try:
        _parse_cidr(text)
    except ValueError:
        return False
    return True


def _contains_ip(cidr: str, ip: str) -> bool:
    network, address = _parse_cidr(cidr), _parse_ip(ip)
    return address.version == network.version and address in network


NETWORK_FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "ip": _ip,
    "isIP": _is_ip,
    "cidr": _cidr,
    "isCIDR": _is_cidr,
    "containsIP": _contains_ip,
}
