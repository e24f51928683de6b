"""FastAPI dependencies: the app's settings, its one engine, and a session per request.

The engine is created lazily, on the first request that needs it, and kept on
``app.state``: importing or building the app never touches the database, and under Ray
Serve every replica creates its own engine in its own process (nothing is pickled from the
driver).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from serve_app.settings import Settings
from storage.engine import is_sqlite, make_engine, session_factory

_ENGINE_LOCK = threading.Lock()


def app_settings(app: FastAPI) -> Settings:
    settings: Settings = app.state.settings
    return settings


def app_sessions(app: FastAPI) -> sessionmaker[Session]:
    """The app's session factory, creating its engine on first use (thread-safe)."""
    factory: sessionmaker[Session] | None = app.state.sessions
    if factory is None:
        with _ENGINE_LOCK:
            factory = app.state.sessions
            if factory is None:
                settings = app_settings(app)
                kwargs: dict[str, Any] = {}
                if not is_sqlite(settings.database_url):
                    kwargs["connect_args"] = {"connect_timeout": settings.db_connect_timeout_s}
                app.state.engine = make_engine(settings.database_url, **kwargs)
                factory = session_factory(app.state.engine)
                app.state.sessions = factory
    return factory


def app_engine(app: FastAPI) -> Engine:
    app_sessions(app)
    engine: Engine = app.state.engine
    return engine


def dispose_engine(app: FastAPI) -> None:
    """Close the app's connection pool (app shutdown)."""
    engine: Engine | None = app.state.engine
    if engine is not None:
        engine.dispose()
    app.state.engine = None
    app.state.sessions = None


async def _settings(request: Request) -> Settings:
    return app_settings(request.app)


async def _sessions(request: Request) -> sessionmaker[Session]:
    return app_sessions(request.app)


async def _engine(request: Request) -> Engine:
    return app_engine(request.app)


def _session(request: Request) -> Iterator[Session]:
    with app_sessions(request.app)() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(_settings)]
EngineDep = Annotated[Engine, Depends(_engine)]
SessionDep = Annotated[Session, Depends(_session)]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(_sessions)]
