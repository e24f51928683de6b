"""The errors ``compute`` raises on purpose, each a ``ValueError`` so callers may catch broadly.

``compute`` imports nothing of squall's, so it cannot reuse ``storage.errors``; the API edge maps
:class:`SpecError` like a configuration error (HTTP 400/422) and :class:`InputDataError` like a
data-integrity error.
"""

from __future__ import annotations


class ComputeError(ValueError):
    """Base of every error raised on purpose by ``compute``."""


class SpecError(ComputeError):
    """An indicator spec or a kernel parameter is invalid; the message lists what is valid."""


class InputDataError(ComputeError):
    """An input array breaks the contract (non-finite, non-positive price, negative volume,
    mismatched shapes, unordered or millisecond timestamps ...); the message names the array
    and the first offending position."""
