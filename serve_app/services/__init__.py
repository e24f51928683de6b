"""The service layer: one module per use case, called alike by routes, the CLI and Ray jobs.

Services take typed requests (:mod:`serve_app.services.requests`) and return domain results or
raise the errors of :mod:`storage.errors`; they never import ``fastapi`` or ``serve_app.api``.
"""
