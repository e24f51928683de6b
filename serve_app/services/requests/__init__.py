"""Typed requests of the use cases: the JSON bodies of the API, the specs of the CLI.

JSON objects only, ``extra="forbid"`` everywhere (a misspelt field is an error naming it), a
description on every field, and every cap a request can exceed checked by the model itself, so
nothing is computed or submitted for a request beyond them.
"""
