"""Response models (and the error bodies) of the API, one module per router.

Request bodies are the typed requests of the services (:mod:`serve_app.services.requests`).
Every time is given twice: ISO-8601 UTC (``ts``) and unix seconds (``ts_unix``).
"""
