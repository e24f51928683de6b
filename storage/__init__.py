"""Storage: the data model, engine factory, repositories and bulk upserts.

Imports nothing of squall's other packages. Repositories take a session and never commit:
the caller owns the transaction.
"""
