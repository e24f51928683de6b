"""Declarative strategies: the rule language, strategy specs, their compiler and grid sweeps.

``parser`` parses one rule (``"ema:12 > ema:26 and rsi:14 < 70"``) into the typed tree of
``rules``, with the source position of every token; ``spec`` validates a whole JSON strategy
spec (entries, exits, stops, weights, grid placeholders) and derives its warm-up; ``compiler``
evaluates it with the indicator pipeline and one ``lax.scan`` state machine (``machine``,
``program``); ``grid`` runs a spec over a parameter grid; ``plugin`` puts a spec behind the
plugin interface; ``reference`` is the slow plain-Python twin the tests hold the compiler to.
Direction: this package imports ``compute.core``, ``compute.indicators`` and
``compute.backtest``, never the other way round.
"""
