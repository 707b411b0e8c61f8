"""The Confluent Schema Registry REST API over :class:`RegistryService`, for the stdlib HTTP server.

Routes are matched on the raw (percent-encoded) path so a subject may contain ``/``; unknown query
parameters are ignored, as confluent-kafka's client sends several (``normalize``, ``format``,
``offset``, ``limit``...). Errors are ``{"error_code": ..., "message": ...}`` with Confluent's codes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from simpul.metrics import metric_name
from simpul.schemas.registry.service import RegistryError, RegistryService, SchemaRequest, SchemaVersion, parse_level

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
MAX_BODY = 16 * 1024 * 1024

Query = dict[str, str]


@dataclass(frozen=True)
class Response:
    """A JSON payload (or raw schema text) and its status."""

    payload: Any
    status: int = 200
    raw: bool = False


Handler = Callable[[RegistryService, list[str], Query, Any], Response]


class RegistryMetrics:
    """The registry's Prometheus metrics, in their own collector registry so that several
    registries can live in one process (tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            # prometheus_client adds the ``_total`` suffix of a counter itself.
            metric_name("registry", "requests"),
            "HTTP requests served, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.schemas = Gauge(
            metric_name("registry", "schemas"), "Distinct schemas (global ids) held.", registry=self.registry
        )


def _flag(query: Query, name: str) -> bool:
    return query.get(name, "").lower() == "true"


def _version_payload(entry: SchemaVersion) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "subject": entry.subject,
        "version": entry.version,
        "id": entry.schema_id,
        "schema": entry.schema,
    }
    if entry.schema_type != "AVRO":
        payload["schemaType"] = entry.schema_type
    return payload


def _schema_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RegistryError(404, 40403, f"Schema {text} not found") from None


# --- handlers (service, path parameters, query, body) -> Response ------------------------------


def _root(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    return Response({})


def _types(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    return Response(["AVRO"])


def _subjects(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    deleted = _flag(query, "deleted") or _flag(query, "deleted_only")
    names = service.subjects(deleted, query.get("subjectPrefix", ""))
    if _flag(query, "deleted_only"):
        live = set(service.subjects(False))
        names = [name for name in names if name not in live]
    return Response(names)


def _versions(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    return Response(service.versions(params[0], _flag(query, "deleted") or _flag(query, "deleted_only")))


def _get_version(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    return Response(_version_payload(service.version(params[0], params[1], _flag(query, "deleted"))))


def _get_version_schema(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    return Response(service.version(params[0], params[1], _flag(query, "deleted")).schema, raw=True)


def _register(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    # Only the id, as Confluent answers: the client then caches the schema text it sent.
    return Response({"id": service.register(params[0], SchemaRequest.from_body(body)).schema_id})


def _lookup(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    return Response(_version_payload(service.lookup(params[0], SchemaRequest.from_body(body), _flag(query, "deleted"))))


def _delete_subject(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    return Response(service.delete_subject(params[0], _flag(query, "permanent")))


def _delete_version(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    return Response(service.delete_version(params[0], params[1], _flag(query, "permanent")))


def _schema(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    schema_type, text = service.schema_by_id(_schema_id(params[0]))
    payload: dict[str, Any] = {"schema": text}
    if schema_type != "AVRO":
        payload["schemaType"] = schema_type
    return Response(payload)


def _schema_text(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    return Response(service.schema_by_id(_schema_id(params[0]))[1], raw=True)


def _schema_subjects(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    usages = service.usages(_schema_id(params[0]), _flag(query, "deleted"))
    return Response(sorted({entry.subject for entry in usages}))


def _schema_versions(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    usages = service.usages(_schema_id(params[0]), _flag(query, "deleted"))
    return Response([{"subject": entry.subject, "version": entry.version} for entry in usages])


def _compatibility(version_param: bool) -> Handler:
    def handler(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
        version = params[1] if version_param else None
        reasons = service.test_compatibility(params[0], SchemaRequest.from_body(body), version)
        payload: dict[str, Any] = {"is_compatible": not reasons}
        if _flag(query, "verbose"):
            payload["messages"] = reasons
        return Response(payload)

    return handler


def _get_config(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    subject = params[0] if params else None
    return Response({"compatibilityLevel": service.level(subject, _flag(query, "defaultToGlobal"))})


def _put_config(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    subject = params[0] if params else None
    return Response({"compatibility": service.set_level(subject, parse_level(body))})


def _delete_config(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    subject = params[0] if params else None
    return Response({"compatibilityLevel": service.delete_level(subject)})


def _mode(service: RegistryService, params: list[str], query: Query, body: Any) -> Response:
    return Response({"mode": "READWRITE"})


_SEGMENT = "([^/]+)"
# (method, path pattern, route label for metrics, handler); the label is the pattern as documented.
ROUTES: list[tuple[str, re.Pattern[str], str, Handler]] = [
    (method, re.compile("^" + pattern.replace("{}", _SEGMENT) + "/?$"), label, handler)
    for method, pattern, label, handler in [
        ("GET", "", "/", _root),
        ("GET", "/schemas/types", "/schemas/types", _types),
        ("GET", "/subjects", "/subjects", _subjects),
        ("GET", "/subjects/{}/versions", "/subjects/{subject}/versions", _versions),
        ("POST", "/subjects/{}/versions", "/subjects/{subject}/versions", _register),
        ("GET", "/subjects/{}/versions/{}", "/subjects/{subject}/versions/{version}", _get_version),
        ("DELETE", "/subjects/{}/versions/{}", "/subjects/{subject}/versions/{version}", _delete_version),
        ("GET", "/subjects/{}/versions/{}/schema", "/subjects/{subject}/versions/{version}/schema", _get_version_schema),
        ("POST", "/subjects/{}", "/subjects/{subject}", _lookup),
        ("DELETE", "/subjects/{}", "/subjects/{subject}", _delete_subject),
        ("GET", "/schemas/ids/{}", "/schemas/ids/{id}", _schema),
        ("GET", "/schemas/ids/{}/schema", "/schemas/ids/{id}/schema", _schema_text),
        ("GET", "/schemas/ids/{}/subjects", "/schemas/ids/{id}/subjects", _schema_subjects),
        ("GET", "/schemas/ids/{}/versions", "/schemas/ids/{id}/versions", _schema_versions),
        ("POST", "/compatibility/subjects/{}/versions/{}", "/compatibility/subjects/{subject}/versions/{version}",
         _compatibility(version_param=True)),
        ("POST", "/compatibility/subjects/{}/versions", "/compatibility/subjects/{subject}/versions",
         _compatibility(version_param=False)),
        ("GET", "/config", "/config", _get_config),
        ("PUT", "/config", "/config", _put_config),
        ("DELETE", "/config", "/config", _delete_config),
        ("GET", "/config/{}", "/config/{subject}", _get_config),
        ("PUT", "/config/{}", "/config/{subject}", _put_config),
        ("DELETE", "/config/{}", "/config/{subject}", _delete_config),
        ("GET", "/mode", "/mode", _mode),
    ]
]


def route(method: str, path: str) -> tuple[str, Handler, list[str]] | None:
    """The route label, handler and decoded path parameters for a request, or ``None``."""
    for route_method, pattern, label, handler in ROUTES:
        match = pattern.match(path)
        if match and route_method == method:
            return label, handler, [unquote(group) for group in match.groups()]
    return None


class RegistryRequestHandler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection to the registry (keep-alive, as confluent-kafka's client uses)."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm and the client's delayed ACK
    # every kept-alive request would then take about 40 ms.
    disable_nagle_algorithm = True
    server_version = "SimpulSchemaRegistry/1"
    # Set on the subclass the server builds: the service and metrics it serves.
    service: RegistryService
    metrics: RegistryMetrics

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") if url.path != "/" else ""
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        if method == "GET" and path == "/metrics":
            self._send(200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST)
            return
        found = route(method, path)
        label = found[0] if found else "unmatched"
        try:
            body = self._read_body()
            if found is None:
                if any(pattern.match(path) for _, pattern, _, _ in ROUTES):
                    raise RegistryError(405, 405, "HTTP 405 Method Not Allowed")
                raise RegistryError(404, 404, "HTTP 404 Not Found")
            response = found[1](self.service, found[2], query, body)
            status, payload = response.status, response.payload
            data = payload.encode() if response.raw else json.dumps(payload).encode()
        except RegistryError as exc:
            status, data = exc.status, json.dumps({"error_code": exc.code, "message": exc.message}).encode()
        except Exception as exc:  # the registry must answer, whatever went wrong inside
            log.exception("registry request %s %s failed", method, self.path)
            status, data = 500, json.dumps({"error_code": 50001, "message": f"Error in the backend data store: {exc}"}).encode()
        self.metrics.requests.labels(method, label, str(status)).inc()
        self._send(status, data, CONTENT_TYPE)

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise RegistryError(413, 413, "Request body too large")
        if not length:
            return None
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RegistryError(400, 400, f"Unrecognized JSON body: {exc}") from None

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)
