"""What every router shares: the base model and the one shape of every error body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(ApiModel):
    """The one shape of every error response: ``error`` and ``message`` always, then the
    fields of the case (the parameter at fault, what is valid, the cap exceeded ...)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="machine-readable snake_case error code")
    message: str = Field(description="what went wrong and what to change, for a human")
    request_id: str | None = Field(None, description="the request's id (X-Request-ID)")
    details: Any = Field(None, description="per-field problems or the data that was missing")
    parameter: str | None = Field(None, description="the query parameter at fault")
    known_coins: list[str] | None = Field(None, description="coins this API knows")
    valid_intervals: list[str] | None = Field(None, description="intervals this API accepts")
    accepted_formats: list[str] | None = Field(None, description="time formats accepted")
    max_limit: int | None = Field(None, description="the cap on candles per request")
    retry_after_s: int | None = Field(None, description="seconds to wait before retrying")


class InvalidSpecBody(ErrorBody):
    """422 ``invalid_spec``: an indicator, strategy or parameter the registry does not accept."""

    valid: list[str] = Field(description="every valid item: syntax, parameters, defaults, ranges")
    max_items: int | None = Field(None, description="the cap on items in one spec")


class InsufficientDataBody(ErrorBody):
    """422 ``insufficient_data``: too few stored candles for the requested warm-up."""

    required_candles: int = Field(description="candles needed up to the last requested bar")
    received_candles: int = Field(description="candles stored up to the last requested bar")
    required_lookback_s: int = Field(description="the warm-up as time: bars x interval seconds")
    first_available_ts: str | None = Field(description="first stored candle, ISO-8601 UTC")
    first_available_ts_unix: int | None = Field(description="first stored candle, unix seconds")
    suggested_start: str | None = Field(
        description="first available + the warm-up: the earliest start with a complete first row"
    )
    suggested_start_unix: int | None = Field(description="suggested_start in unix seconds")
