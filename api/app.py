"""The lookup API as a FastAPI application: routes, authentication, scope checks.

Handlers are ``async`` over an async psycopg pool: one event loop serves every request, with no
thread hand-offs, and the audit middleware awaits its insert on the same loop.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the handlers' annotations, which
# name dependencies local to build_app, and only evaluated annotations can.
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from psycopg_pool import AsyncConnectionPool
from rapidfuzz import fuzz, process

from simpul.api import queries
from simpul.api.access import (
    ALWAYS_VISIBLE,
    Caller,
    KeyFields,
    Keyring,
    PurposeError,
    ScopeError,
    check_purpose,
    record_key_fields,
    shown_lineage,
    shown_record_id,
    visible_history,
)
from simpul.api.audit import AuditEntry, AuditMiddleware, audit_entry
from simpul.api.models import Citizens, History, Lineage, NameSearch, NikLookup, Problem
from simpul.config import SimpulConfig
from simpul.streams.mapping import align_databases, load_mapping

DESCRIPTION = """\
Reads of the master citizen index: golden records, where they come from, how they changed.

Every call carries the agency's key (`X-API-Key`) and why it reads (`X-Purpose`: stored in the
audit trail, so no personal data in it). An agency sees `master_id` and `deceased` always and,
of the other golden fields, only those in its scope: the rest is omitted. Every call, allowed or
refused, is written to the audit trail before it is answered.

A NIK travels in a POST body (`/v1/citizens/lookup`), never in a URL: URLs are written to access
logs, proxy logs and browser histories. This service logs no request line and no body, and its
audit trail keeps route templates, not paths.
"""
OPENAPI_URL = "/openapi.json"
UNAUDITED_PATHS = frozenset({"/health", "/metrics", OPENAPI_URL, "/docs", "/docs/oauth2-redirect", "/redoc"})
NIK_LOOKUP_LIMIT = 10  # a NIK shared by several citizens is a conflict to show, not to hide
FUZZY_CANDIDATES = 2000  # bounds the rows and the scoring work of one fuzzy search
FUZZY_MIN_SCORE = 85.0
POOL_SIZE = (2, 8)
STATEMENT_TIMEOUT_MS = 5000

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "X-Purpose missing or unusable."},
    401: {"model": Problem, "description": "Unknown or missing API key."},
    403: {"model": Problem, "description": "The request needs a field outside the agency's scope."},
    503: {"model": Problem, "description": "The master index or the audit trail is unavailable."},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No such citizen."}}

api_key = APIKeyHeader(
    name="X-API-Key",
    scheme_name="AgencyKey",
    description="The calling agency's own key (one per agency in api.clients; it decides the agency's field scope).",
    auto_error=False,
)


def build_app(config: SimpulConfig) -> FastAPI:
    """The API over the master index ``config.sinks.master_index``, for the agencies in
    ``config.api.clients`` (keys read from the environment now; the pool opens with the app)."""
    keyring = Keyring.from_settings(config.api, os.environ)
    key_fields = record_key_fields(align_databases(load_mapping(config.mapping_path), config.mysql_databases))
    pool = AsyncConnectionPool(
        config.sinks.master_index.dsn(),
        min_size=POOL_SIZE[0],
        max_size=POOL_SIZE[1],
        open=False,
        name="simpul-api",
        timeout=5.0,
        kwargs={"autocommit": True, "application_name": "simpul-api", "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"},
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=True, timeout=30.0)
        try:
            yield
        finally:
            await pool.close()

    async def write_audit(entry: AuditEntry, method: str, route: str, status: int) -> None:
        async with pool.connection() as conn:
            await queries.write_audit(conn, entry.agency, entry.purpose, method, route, entry.master_ids, entry.fields, status)

    # FastAPI's own OpenTelemetry logs record validation failures with their input (a NIK): off.
    telemetry_off = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False, "auto_configure": False}
    app = FastAPI(
        title="Simpul lookup API", version="1", description=DESCRIPTION, openapi_url=OPENAPI_URL, lifespan=lifespan, telemetry=telemetry_off
    )
    app.add_middleware(AuditMiddleware, write=write_audit, unaudited=UNAUDITED_PATHS)

    @app.exception_handler(ScopeError)
    async def out_of_scope(request: Request, exc: ScopeError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    async def authorized(
        request: Request,
        key: Annotated[str | None, Security(api_key)],
        purpose: Annotated[str | None, Header(alias="X-Purpose", description="Why this record is read (stored in the audit trail; no personal data).")] = None,
    ) -> Caller:
        entry = audit_entry(request.scope)
        try:
            entry.purpose = check_purpose(purpose)
            refusal = None
        except PurposeError as exc:
            refusal = str(exc)
        caller = keyring.authenticate(key)
        if caller is None:
            raise HTTPException(401, "unknown or missing API key (header X-API-Key)")
        entry.agency = caller.agency
        if refusal is not None:
            raise HTTPException(400, refusal)
        return caller

    Authorized = Annotated[Caller, Depends(authorized)]
    MasterId = Annotated[str, Path(min_length=1, max_length=64, description="The citizen's master id.")]

    @app.post("/v1/citizens/lookup", response_model=Citizens, response_model_exclude_unset=True, responses={**ERRORS, **NOT_FOUND}, tags=["citizens"])
    async def lookup_by_nik(body: NikLookup, request: Request, caller: Authorized) -> dict[str, Any]:
        """The citizen with this NIK (several if the index holds a NIK conflict). Needs `nik` in scope."""
        caller.require(("nik",), "a lookup by NIK")
        async with pool.connection() as conn:
            rows = await queries.citizens_by_nik(conn, caller.columns, body.nik, NIK_LOOKUP_LIMIT)
        if not rows:
            raise HTTPException(404, "no citizen has this NIK")
        return _citizens(request, caller, rows)

    @app.post("/v1/citizens/search", response_model=Citizens, response_model_exclude_unset=True, responses=ERRORS, tags=["citizens"])
    async def search_by_name(body: NameSearch, request: Request, caller: Authorized) -> dict[str, Any]:
        """Citizens with this name (case-insensitive) and birth date; `fuzzy` adds close spellings.
        Needs `name` and `birth_date` in scope."""
        caller.require(("name", "birth_date"), "a search by name and birth date")
        name = " ".join(body.name.split())
        async with pool.connection() as conn:
            if body.fuzzy:
                rows = _closest(name, await queries.citizens_born_on(conn, caller.columns, body.birth_date, FUZZY_CANDIDATES), body.limit)
            else:
                rows = await queries.citizens_by_name(conn, caller.columns, name, body.birth_date, body.limit)
        return _citizens(request, caller, rows)

    @app.get("/v1/citizens/{master_id}", response_model=Citizens, response_model_exclude_unset=True, responses={**ERRORS, **NOT_FOUND}, tags=["citizens"])
    async def citizen_by_id(master_id: MasterId, request: Request, caller: Authorized) -> dict[str, Any]:
        """The citizen with this master id."""
        async with pool.connection() as conn:
            row = await queries.citizen_by_id(conn, caller.columns, master_id)
        if row is None:
            raise HTTPException(404, "no citizen has this master id")
        return _citizens(request, caller, [row])

    @app.get("/v1/citizens/{master_id}/lineage", response_model=Lineage, responses={**ERRORS, **NOT_FOUND}, tags=["citizens"])
    async def lineage(master_id: MasterId, request: Request, caller: Authorized) -> dict[str, Any]:
        """The citizen's agency records with the rule, matched record, probability, weight and
        per-comparison bits that linked each, and which record gave each golden field."""
        async with pool.connection() as conn:
            sources = await queries.citizen_lineage(conn, master_id)
            if sources is None:
                raise HTTPException(404, "no citizen has this master id")
            links = await queries.record_links(conn, master_id)
        fields = shown_lineage(sources, caller, key_fields)
        audit_entry(request.scope).returned([master_id], fields)
        return {"master_id": master_id, "fields": fields, "records": [_shown_link(link, caller, key_fields) for link in links]}

    @app.get("/v1/citizens/{master_id}/history", response_model=History, responses={**ERRORS, **NOT_FOUND}, tags=["citizens"])
    async def history(
        master_id: MasterId, request: Request, caller: Authorized, limit: Annotated[int, Query(ge=1, le=1000, description="Latest changes to read; those outside the scope are then left out.")] = 100
    ) -> dict[str, Any]:
        """The citizen's changes, newest first, limited to the fields in scope (also after a merge removed it)."""
        async with pool.connection() as conn:
            rows = await queries.citizen_history(conn, master_id, limit)
            if not rows and not await queries.citizen_exists(conn, master_id):
                raise HTTPException(404, "no citizen has this master id")
        changes = visible_history(rows, caller, key_fields)
        audit_entry(request.scope).returned([master_id], (name for change in changes for name in change["changed"]))
        return {"master_id": master_id, "changes": changes}

    @app.get("/health", tags=["operations"], responses={503: {"description": "The master index is unreachable."}})
    async def health() -> JSONResponse:
        """Whether the service reaches the master index (no key needed, not audited)."""
        try:
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


def _citizens(request: Request, caller: Caller, rows: list[dict[str, Any]]) -> dict[str, Any]:
    audit_entry(request.scope).returned((row["master_id"] for row in rows), (*ALWAYS_VISIBLE, *caller.columns) if rows else ())
    return {"citizens": rows}


def _closest(name: str, candidates: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The candidates whose name is closest to ``name`` (token order ignored), best first."""
    names = [candidate["name"].lower() for candidate in candidates]
    best = process.extract(name.lower(), names, scorer=fuzz.token_sort_ratio, score_cutoff=FUZZY_MIN_SCORE, limit=limit)
    return [{**candidates[index], "match_score": round(score, 1)} for _, score, index in best]


def _shown_link(link: dict[str, Any], caller: Caller, key_fields: KeyFields) -> dict[str, Any]:
    record_id = shown_record_id(link["record_id"], caller, key_fields)
    matched = link["matched_record_id"]
    return {
        **link,
        "record_id": record_id,
        "record_key": link["record_key"] if record_id == link["record_id"] else None,
        "matched_record_id": shown_record_id(matched, caller, key_fields) if matched is not None else None,
        "contributions": caller.visible(link["contributions"]),
    }
