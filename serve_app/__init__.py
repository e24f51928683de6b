"""The composition root: settings, the Ray Serve/FastAPI app, the CLI and job entry points."""
