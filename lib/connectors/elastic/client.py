"""The Elasticsearch client: :func:`make_client`, the one client factory of every sink, tool
and test, with JSON encoded and decoded by orjson."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lib.settings import Settings

__all__ = ["TOOL_RETRIES", "json_default", "make_client", "orjson_serializers"]

TOOL_RETRIES = 3  # client-side retries of the command-line tools (elasticsearch-py's default)


def json_default() -> Callable[[Any], Any]:
    """The client's fallback for types orjson does not know (numpy scalars, Decimal...)."""
    from elasticsearch.serializer import JsonSerializer

    return JsonSerializer().default


def orjson_serializers() -> dict[str, Any]:
    """Serializers for the client that encode and decode with orjson instead of stdlib json.

    Bulk bodies and their responses are most of the sink's CPU time; orjson is several times
    faster on them. (It writes NaN as null where stdlib json writes an invalid ``NaN``.)
    """
    import orjson
    from elasticsearch.serializer import (
        CompatibilityModeJsonSerializer,
        CompatibilityModeNdjsonSerializer,
        JsonSerializer,
        NdjsonSerializer,
    )

    class _Orjson:
        def json_dumps(self, data: Any) -> bytes:
            return orjson.dumps(data, default=self.default)  # type: ignore[attr-defined]

        def json_loads(self, data: bytes) -> Any:
            return orjson.loads(data)

    classes = (
        JsonSerializer,
        CompatibilityModeJsonSerializer,
        NdjsonSerializer,
        CompatibilityModeNdjsonSerializer,
    )
    return {cls.mimetype: type(f"Orjson{cls.__name__}", (_Orjson, cls), {})() for cls in classes}


def make_client(settings: Settings, **overrides: Any) -> Any:
    """The Elasticsearch client of every sink and tool: URL, credentials and CA from the
    settings (``settings.es_client_kwargs()``), JSON encoded and decoded with orjson
    (:func:`orjson_serializers`), requests time out after 30 s.

    The client does not retry by itself: the bulk core (:mod:`.bulk`) owns the retry
    schedule. The command-line tools pass ``max_retries=TOOL_RETRIES`` to ride over a brief
    429/5xx or a dropped connection. ``overrides`` are further ``Elasticsearch`` arguments
    (``hosts``...).
    """
    from elasticsearch import Elasticsearch

    kwargs: dict[str, Any] = {
        **settings.es_client_kwargs(),
        "max_retries": 0,
        "retry_on_timeout": False,
        "request_timeout": 30,
        "serializers": orjson_serializers(),
    }
    kwargs.update(overrides)
    return Elasticsearch(**kwargs)
