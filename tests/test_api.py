"""The lookup API: keys, scopes, purposes and the audit middleware (pure), then the real server
over HTTP against a master index of its own on the test PostgreSQL: lookups, search, lineage,
history, scope filtering, refusals, the OpenAPI description, metrics, and one audit row per
request with no personal data in it."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import secrets
import stat
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from conftest import free_port, in_thread
from simpul.api.access import (
    Caller,
    Keyring,
    PurposeError,
    ScopeError,
    check_purpose,
    record_key_fields,
    shown_record_id,
    visible_history,
)
from simpul.api.audit import AuditEntry, AuditMiddleware
from simpul.api.server import run_api
from simpul.config import ApiClient, ApiSettings, ConfigError, SimpulConfig, load_config
from simpul.metrics import COMPONENT_PORT_OFFSETS
from simpul.shutdown import Shutdown
from simpul.sinks.master_schema import ensure_schema
from simpul.stack.envfile import ensure_stack_env
from simpul.streams.mapping import load_mapping

ROOT = Path(__file__).resolve().parents[1]
KEY_FIELDS = record_key_fields(load_mapping())
DINKES = Caller("dinkes", frozenset({"nik", "name", "birth_date", "sex", "phone"}))
DISDUKCAPIL = Caller("disdukcapil", frozenset({"nik", "name", "titles", "birth_date", "birth_place", "sex", "street", "rt", "rw", "kelurahan", "kecamatan", "kk", "phone"}))
STATISTICS = Caller("bps", frozenset({"sex", "kecamatan"}))


# --- pure ---------------------------------------------------------------------------------------


def _api(*clients: tuple[str, str, list[str]]) -> ApiSettings:
    return ApiSettings(clients=[ApiClient(agency=a, key_env=e, fields=f) for a, e, f in clients])  # type: ignore[arg-type]


def test_a_key_names_its_agency_and_nothing_else_does() -> None:
    keys = {"K_DINKES": "d" * 20, "K_DINSOS": "s" * 20}
    ring = Keyring.from_settings(_api(("dinkes", "K_DINKES", ["nik", "phone"]), ("dinsos", "K_DINSOS", ["kk"])), keys)
    assert ring.authenticate("d" * 20) == Caller("dinkes", frozenset({"nik", "phone"}))
    assert ring.authenticate("s" * 20) == Caller("dinsos", frozenset({"kk"}))
    for wrong in (None, "", "d" * 19, "d" * 21, "K_DINKES"):
        assert ring.authenticate(wrong) is None


def test_keys_come_from_the_environment_and_must_be_usable() -> None:
    api = _api(("dinkes", "K_DINKES", []), ("dinsos", "K_DINSOS", []))
    with pytest.raises(ConfigError, match=r"api\.clients\.dinkes\.key_env: environment variable K_DINKES is not set"):
        Keyring.from_settings(api, {"K_DINSOS": "s" * 20})
    with pytest.raises(ConfigError, match="shorter than 16"):
        Keyring.from_settings(api, {"K_DINKES": "short", "K_DINSOS": "s" * 20})
    with pytest.raises(ConfigError, match="dinkes and dinsos have the same key"):
        Keyring.from_settings(api, {"K_DINKES": "x" * 20, "K_DINSOS": "x" * 20})


def test_a_scope_names_what_is_missing_and_filters_field_maps() -> None:
    assert DINKES.columns == ("nik", "name", "birth_date", "sex", "phone")
    assert DINKES.sees("master_id") and DINKES.sees("deceased") and not DINKES.sees("kk")
    DINKES.require(("nik",), "a lookup by NIK")
    with pytest.raises(ScopeError, match="a lookup by NIK needs the field\\(s\\) nik, outside the scope of agency bps"):
        STATISTICS.require(("nik",), "a lookup by NIK")
    with pytest.raises(ScopeError, match="needs the field\\(s\\) name, birth_date"):
        STATISTICS.require(("name", "birth_date", "sex"), "a search")
    weights = {"nik": 9.0, "name": 3.0, "kelurahan": 1.0, "deceased": 0.5, "members": 1.0}
    assert DINKES.visible(weights) == {"nik": 9.0, "name": 3.0, "deceased": 0.5}


def test_a_purpose_is_required_and_carries_no_personal_number() -> None:
    assert check_purpose("  verifikasi   AK/1 ") == "verifikasi AK/1"
    assert check_purpose("rujukan pasien RT 001/002") == "rujukan pasien RT 001/002"
    for missing in (None, "", "   "):
        with pytest.raises(PurposeError, match="required"):
            check_purpose(missing)
    for personal in ("cek NIK 3673015205900001", "hubungi 081234567890", "KK 36730101"):
        with pytest.raises(PurposeError, match="personal data"):
            check_purpose(personal)
    with pytest.raises(PurposeError, match="longer than 200"):
        check_purpose("x" * 201)


def test_record_keys_that_are_golden_values_are_hidden_out_of_scope() -> None:
    assert KEY_FIELDS[("disdukcapil", "public.penduduk")] == {"nik"}
    assert KEY_FIELDS[("disdukcapil", "public.kartu_keluarga")] == {"kk"}
    assert KEY_FIELDS[("dinkes", "public.pasien")] == frozenset()
    person, family, patient = "disdukcapil:public.penduduk:3673015205900001", "disdukcapil:public.kartu_keluarga:3673010101120001", "dinkes:public.pasien:RM-7"
    assert shown_record_id(person, DINKES, KEY_FIELDS) == person
    assert shown_record_id(family, DINKES, KEY_FIELDS) == "disdukcapil:public.kartu_keluarga:*"
    assert shown_record_id(family, DISDUKCAPIL, KEY_FIELDS) == family
    assert shown_record_id(person, STATISTICS, KEY_FIELDS) == "disdukcapil:public.penduduk:*"
    assert shown_record_id(patient, STATISTICS, KEY_FIELDS) == patient
    assert shown_record_id("elsewhere:public.t:1", DISDUKCAPIL, KEY_FIELDS) == "elsewhere:public.t:*"  # unknown: fail closed


def test_history_shows_only_changes_in_scope() -> None:
    family = "disdukcapil:public.kartu_keluarga:3673010101120001"
    rows = [
        {"change": "created", "changed": {"name": {"old": None, "new": "SITI"}, "kk": {"old": None, "new": "3673010101120001"},
                                          "members": {"added": [family], "removed": []}, "attributes": {"old": None, "new": {"x": 1}}}},
        {"change": "updated", "changed": {"kk": {"old": "1", "new": "2"}, "lineage": {"old": {"kk": family}, "new": {"kk": "dinsos:bansos.anggota_penerima:9"}}}},
        {"change": "updated", "changed": {"phone": {"old": "1", "new": "2"}}},
        {"change": "removed", "changed": {"members": {"added": [], "removed": [family]}}},
    ]
    shown = visible_history(rows, DINKES, KEY_FIELDS)
    assert [row["change"] for row in shown] == ["created", "updated", "removed"]
    assert shown[0]["changed"] == {"name": {"old": None, "new": "SITI"}, "members": {"added": ["disdukcapil:public.kartu_keluarga:*"], "removed": []}}
    assert shown[1]["changed"] == {"phone": {"old": "1", "new": "2"}}
    everything = visible_history(rows, DISDUKCAPIL, KEY_FIELDS)
    assert [row["change"] for row in everything] == ["created", "updated", "updated", "removed"]
    assert everything[1]["changed"]["lineage"]["old"] == {"kk": family}


def _run_asgi(app: Any, path: str = "/v1/citizens/x") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send))
    return sent


async def _secret_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b'{"nik": "3673015205900001"}'})


def test_nothing_is_answered_unaudited() -> None:
    written: list[tuple[AuditEntry, str, str, int]] = []

    async def write(entry: AuditEntry, method: str, route: str, status: int) -> None:
        written.append((entry, method, route, status))

    async def broken(entry: AuditEntry, method: str, route: str, status: int) -> None:
        raise psycopg.OperationalError("connection lost")

    sent = _run_asgi(AuditMiddleware(_secret_app, write, frozenset({"/health"})))
    assert sent[0]["status"] == 200 and written[0][1:] == ("GET", "unmatched", 200)
    refused = _run_asgi(AuditMiddleware(_secret_app, broken, frozenset()))
    assert refused[0]["status"] == 503 and b"3673" not in b"".join(m.get("body", b"") for m in refused)
    _run_asgi(AuditMiddleware(_secret_app, write, frozenset({"/health"})), "/health")
    assert len(written) == 1, "an unaudited path wrote a row"


def test_the_configs_name_the_agencies_and_their_scopes() -> None:
    expected = {
        "disdukcapil": ["nik", "name", "titles", "birth_date", "birth_place", "sex", "street", "rt", "rw", "kelurahan", "kecamatan", "kk", "phone"],
        "disnaker": ["nik", "name", "birth_date", "birth_place", "sex", "street", "rt", "rw", "kelurahan", "kecamatan", "phone"],
        "dinsos": ["nik", "name", "birth_date", "sex", "kk", "kelurahan", "kecamatan"],
        "dinkes": ["nik", "name", "birth_date", "sex", "phone"],
    }
    for path, prefix, port in (("simpul.yaml", "SIMPUL_API_KEY_", 18088), ("tests/simpul.test.yaml", "SIMPUL_TEST_API_KEY_", 28088)):
        api = load_config(ROOT / path).api
        assert api.port == port
        assert {c.agency: list(c.fields) for c in api.clients} == expected
        assert [c.key_env for c in api.clients] == [prefix + agency.upper() for agency in expected]


def test_the_stack_env_holds_a_generated_key_per_client(test_config: SimpulConfig, tmp_path: Path) -> None:
    config = test_config.model_copy(update={"stack": test_config.stack.model_copy(update={"home": tmp_path})})
    first = ensure_stack_env(config)
    keys = {c.key_env: first[c.key_env] for c in config.api.clients}
    assert len(set(keys.values())) == 4 and all(len(key) >= 32 for key in keys.values())
    assert {k: ensure_stack_env(config)[k] for k in keys} == keys, "a key changed on the second call"
    assert stat.S_IMODE((tmp_path / "stack.env").stat().st_mode) == 0o600


# --- the real server ----------------------------------------------------------------------------

NIK_SITI, NIK_SITI_2, NIK_SITY, NIK_AHMAD = "3673015205900001", "3673015205900002", "3673015205900003", "3673020101500001"
KK_SITI, KK_OLD = "3673010101120001", "3673010101120099"
PHONE_SITI = "081234567890"
C_SITI, C_SITI_2, C_SITY, C_AHMAD = "C" + "a1" * 10, "C" + "b2" * 10, "C" + "c3" * 10, "C" + "d4" * 10
PERSON = f"disdukcapil:public.penduduk:{NIK_SITI}"
FAMILY = f"disdukcapil:public.kartu_keluarga:{KK_SITI}"
PATIENT = "dinkes:public.pasien:RM-000123"
PERSONAL = [NIK_SITI, NIK_SITI_2, NIK_SITY, NIK_AHMAD, KK_SITI, KK_OLD, PHONE_SITI, "Siti", "SITI", "Sity", "Ahmad", "Melati"]
PURPOSE = "verifikasi layanan"
ALL_FIELDS = {"master_id", "deceased", "version", "updated_at", "nik", "name", "titles", "birth_date", "birth_place", "sex",
              "street", "rt", "rw", "kelurahan", "kecamatan", "kk", "phone"}
BORN = date(1990, 5, 12)
NOW = datetime(2025, 6, 1, 8, 0, tzinfo=timezone.utc)


def _citizen(master_id: str, nik: str, name: str, born: date, kk: str, phone: str | None, deceased: bool, lineage: dict[str, str]) -> dict[str, Any]:
    return {"master_id": master_id, "anchor_record_id": f"disdukcapil:public.penduduk:{nik}", "members": [f"disdukcapil:public.penduduk:{nik}"],
            "nik": nik, "name": name, "titles": ["S.Pd"], "birth_date": born, "birth_place": "SERANG", "sex": "P",
            "street": "JL. MELATI NO. 3", "rt": "001", "rw": "002", "kelurahan": "CIPARE", "kecamatan": "SERANG", "kk": kk,
            "phone": phone, "deceased": deceased, "lineage": Jsonb(lineage), "version": 3, "source_updated_at": NOW, "indexed_at": NOW}


def _seed(conn: psycopg.Connection[Any]) -> None:
    citizens = [
        {**_citizen(C_SITI, NIK_SITI, "Siti Aminah", BORN, KK_SITI, PHONE_SITI, False,
                    {"nik": PERSON, "name": PERSON, "birth_date": PERSON, "street": FAMILY, "kk": FAMILY, "phone": PATIENT, "deceased": PERSON}),
         "members": [PERSON, FAMILY, PATIENT]},
        _citizen(C_SITI_2, NIK_SITI_2, "SITI AMINAH", BORN, KK_OLD, None, False, {}),
        _citizen(C_SITY, NIK_SITY, "Sity Aminah", BORN, KK_OLD, None, False, {}),
        _citizen(C_AHMAD, NIK_AHMAD, "Ahmad Fauzi", date(1950, 1, 1), KK_OLD, None, True, {}),
    ]
    columns = list(citizens[0])
    insert = sql.SQL("INSERT INTO mpi.citizen ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(", ").join(sql.Placeholder() * len(columns)))
    for citizen in citizens:
        conn.execute(insert, [citizen[c] for c in columns])
    weights = {"nik": 9.5, "name": 4.1, "birth_date": 3.0, "kelurahan": 1.2, "phone": 2.5}
    for record_id, rule, matched, probability in ((PERSON, "new", None, None), (FAMILY, "kk_name", PERSON, None), (PATIENT, "score", PERSON, 0.998)):
        source, table, key = record_id.split(":", 2)
        conn.execute(
            "INSERT INTO mpi.record_link VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (record_id, source, table, key, C_SITI, rule, matched, probability, 12.3 if probability else None, Jsonb(weights if probability else {}), NOW, NOW),
        )
    history = [
        ("created", {"nik": {"old": None, "new": NIK_SITI}, "name": {"old": None, "new": "Siti Aminah"}, "kk": {"old": None, "new": KK_OLD},
                     "members": {"added": [PERSON], "removed": []}}),
        ("updated", {"phone": {"old": None, "new": PHONE_SITI}, "members": {"added": [PATIENT], "removed": []}}),
        ("updated", {"kk": {"old": KK_OLD, "new": KK_SITI}}),
    ]
    for version, (change, changed) in enumerate(history, 1):
        conn.execute(
            "INSERT INTO mpi.citizen_history (master_id, version, change, changed, kafka_topic, kafka_partition, kafka_offset, source_changed_at)"
            " VALUES (%s, %s, %s, %s, 'simpul.citizens', 0, %s, %s)",
            (C_SITI, version, change, Jsonb(changed), version, NOW),
        )


@dataclass
class Api:
    """The running server, its keys by agency, and its master-index DSN."""

    config: SimpulConfig
    keys: dict[str, str]
    dsn: str

    def call(self, method: str, path: str, agency: str | None = "disdukcapil", body: Any = None,
             purpose: str | None = PURPOSE, key: str | None = None) -> tuple[int, Any]:
        """One request over a new connection; (status, decoded JSON body)."""
        headers = {"Content-Type": "application/json"}
        if key or agency:
            headers["X-API-Key"] = key or self.keys[agency]  # type: ignore[index]
        if purpose is not None:
            headers["X-Purpose"] = purpose
        conn = http.client.HTTPConnection(self.config.api.host, self.config.api.port, timeout=10)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        return response.status, json.loads(raw) if raw and response.getheader("content-type", "").startswith("application/json") else raw.decode()


@pytest.fixture(scope="module")
def api(stack_config: SimpulConfig) -> Iterator[Api]:
    """The API served from this process (uvicorn in a thread) over a fresh master index of its own,
    for the four configured agencies plus ``bps`` (sex and kecamatan only)."""
    admin = stack_config.sinks.master_index.dsn()
    database = f"simpul_master_api_{uuid.uuid4().hex[:10]}"
    dsn = f"{admin.rsplit('/', 1)[0]}/{database}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        with pytest.MonkeyPatch.context() as patch:
            clients = [*stack_config.api.clients, ApiClient(agency="bps", key_env="SIMPUL_TEST_API_KEY_BPS", fields=["sex", "kecamatan"])]
            keys = {client.agency: secrets.token_urlsafe(24) for client in clients}
            for client in clients:
                patch.setenv(client.key_env, keys[client.agency])
            patch.setenv("SIMPUL_TEST_API_MASTER_DSN", dsn)
            master = stack_config.sinks.master_index.model_copy(update={"dsn_env": "SIMPUL_TEST_API_MASTER_DSN", "database": database})
            config = stack_config.model_copy(update={
                "sinks": stack_config.sinks.model_copy(update={"master_index": master}),
                "api": stack_config.api.model_copy(update={"port": free_port(), "clients": clients}),
                "metrics": stack_config.metrics.model_copy(update={"port": free_port() - COMPONENT_PORT_OFFSETS["api"]}),
            })
            with psycopg.connect(dsn, autocommit=True) as conn:
                ensure_schema(conn)
                _seed(conn)
            shutdown = Shutdown()
            with in_thread(lambda: run_api(config, shutdown), shutdown, 30) as failures:
                server = Api(config, keys, dsn)
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if server.call("GET", "/health", agency=None)[0] == 200:
                            break
                    except OSError:
                        pass
                    assert not failures and time.monotonic() < deadline, "the API did not answer /health within 30 s"
                    time.sleep(0.1)
                yield server
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


@pytest.mark.stack
def test_lookup_by_nik_and_by_master_id(api: Api) -> None:
    status, body = api.call("POST", "/v1/citizens/lookup", body={"nik": NIK_SITI})
    assert status == 200, body
    [citizen] = body["citizens"]
    assert set(citizen) == ALL_FIELDS
    assert citizen["master_id"] == C_SITI and citizen["kk"] == KK_SITI and citizen["birth_date"] == "1990-05-12" and citizen["deceased"] is False
    status, body = api.call("GET", f"/v1/citizens/{C_AHMAD}", agency="dinsos")
    assert status == 200 and body["citizens"][0]["deceased"] is True and body["citizens"][0]["name"] == "Ahmad Fauzi"


@pytest.mark.stack
def test_each_agency_sees_only_its_scope(api: Api) -> None:
    status, body = api.call("POST", "/v1/citizens/lookup", agency="dinkes", body={"nik": NIK_SITI})
    assert status == 200
    assert set(body["citizens"][0]) == {"master_id", "deceased", "version", "updated_at", "nik", "name", "birth_date", "sex", "phone"}
    status, body = api.call("GET", f"/v1/citizens/{C_SITI}", agency="dinsos")
    assert set(body["citizens"][0]) == {"master_id", "deceased", "version", "updated_at", "nik", "name", "birth_date", "sex", "kk", "kelurahan", "kecamatan"}
    status, body = api.call("GET", f"/v1/citizens/{C_SITI}", agency="bps")
    assert status == 200 and set(body["citizens"][0]) == {"master_id", "deceased", "version", "updated_at", "sex", "kecamatan"}
    assert body["citizens"][0]["sex"] == "P"


@pytest.mark.stack
def test_search_by_name_and_birth_date(api: Api) -> None:
    status, body = api.call("POST", "/v1/citizens/search", agency="disnaker", body={"name": "siti  AMINAH", "birth_date": "1990-05-12"})
    assert status == 200, body
    assert sorted(c["master_id"] for c in body["citizens"]) == sorted([C_SITI, C_SITI_2])
    assert all("kk" not in c and "phone" in c for c in body["citizens"])
    status, body = api.call("POST", "/v1/citizens/search", agency="disnaker", body={"name": "Siti Aminah", "birth_date": "1990-05-12", "fuzzy": True})
    scores = {c["master_id"]: c["match_score"] for c in body["citizens"]}
    assert scores[C_SITI] == scores[C_SITI_2] == 100 and 85 <= scores[C_SITY] < 100 and C_AHMAD not in scores
    status, body = api.call("POST", "/v1/citizens/search", agency="disnaker", body={"name": "Siti Aminah", "birth_date": "1991-05-12"})
    assert status == 200 and body == {"citizens": []}


@pytest.mark.stack
def test_lineage_shows_records_rules_and_field_sources_within_scope(api: Api) -> None:
    status, body = api.call("GET", f"/v1/citizens/{C_SITI}/lineage")
    assert status == 200, body
    assert body["fields"] == {"nik": PERSON, "name": PERSON, "birth_date": PERSON, "street": FAMILY, "kk": FAMILY, "phone": PATIENT, "deceased": PERSON}
    records = {r["record_id"]: r for r in body["records"]}
    assert records[PATIENT]["rule"] == "score" and records[PATIENT]["matched_record_id"] == PERSON
    assert records[PATIENT]["probability"] == 0.998 and records[PATIENT]["weight"] == 12.3 and records[PATIENT]["contributions"]["kelurahan"] == 1.2
    assert records[FAMILY]["rule"] == "kk_name" and records[FAMILY]["record_key"] == KK_SITI

    status, body = api.call("GET", f"/v1/citizens/{C_SITI}/lineage", agency="dinkes")
    assert body["fields"] == {"nik": PERSON, "name": PERSON, "birth_date": PERSON, "phone": PATIENT, "deceased": PERSON}
    records = {r["record_id"]: r for r in body["records"]}
    hidden = "disdukcapil:public.kartu_keluarga:*"
    assert set(records) == {PERSON, hidden, PATIENT}
    assert records[hidden]["record_key"] is None and records[hidden]["table"] == "public.kartu_keluarga"
    assert records[PATIENT]["contributions"] == {"nik": 9.5, "name": 4.1, "birth_date": 3.0, "phone": 2.5}
    assert KK_SITI not in json.dumps(body)


@pytest.mark.stack
def test_history_shows_changes_within_scope(api: Api) -> None:
    status, body = api.call("GET", f"/v1/citizens/{C_SITI}/history")
    assert status == 200 and [c["version"] for c in body["changes"]] == [3, 2, 1]
    status, body = api.call("GET", f"/v1/citizens/{C_SITI}/history", agency="dinkes")
    assert [c["version"] for c in body["changes"]] == [2, 1], "the KK-only update is not Dinkes's business"
    assert body["changes"][1]["changed"] == {"nik": {"old": None, "new": NIK_SITI}, "name": {"old": None, "new": "Siti Aminah"},
                                             "members": {"added": [PERSON], "removed": []}}
    status, body = api.call("GET", f"/v1/citizens/{C_SITI}/history", agency="bps")
    assert [c["changed"] for c in body["changes"]] == [
        {"members": {"added": [PATIENT], "removed": []}}, {"members": {"added": ["disdukcapil:public.penduduk:*"], "removed": []}}]
    status, body = api.call("GET", f"/v1/citizens/{C_SITI}/history?limit=2")
    assert [c["version"] for c in body["changes"]] == [3, 2]


@pytest.mark.stack
def test_refusals(api: Api) -> None:
    assert api.call("POST", "/v1/citizens/lookup", agency=None, key="not-a-key-of-anyone", body={"nik": NIK_SITI})[0] == 401
    assert api.call("GET", f"/v1/citizens/{C_SITI}", agency=None)[0] == 401
    status, body = api.call("POST", "/v1/citizens/lookup", agency="bps", body={"nik": NIK_SITI})
    assert status == 403 and "needs the field(s) nik" in body["detail"] and "bps" in body["detail"]
    status, body = api.call("POST", "/v1/citizens/search", agency="bps", body={"name": "Siti Aminah", "birth_date": "1990-05-12"})
    assert status == 403 and "name, birth_date" in body["detail"]
    status, body = api.call("GET", f"/v1/citizens/{C_SITI}", purpose=None)
    assert status == 400 and "X-Purpose" in body["detail"]
    assert api.call("GET", f"/v1/citizens/{C_SITI}", purpose=f"cek {NIK_SITI}")[0] == 400
    assert api.call("GET", "/v1/citizens/Cffffffffffffffffffff")[0] == 404
    assert api.call("GET", "/v1/citizens/Cffffffffffffffffffff/lineage")[0] == 404
    assert api.call("GET", "/v1/citizens/Cffffffffffffffffffff/history")[0] == 404
    assert api.call("POST", "/v1/citizens/lookup", body={"nik": "3673019999999999"})[0] == 404
    assert api.call("POST", "/v1/citizens/lookup", body={"nik": "36730152"})[0] == 422


@pytest.mark.stack
def test_the_openapi_description(api: Api) -> None:
    status, doc = api.call("GET", "/openapi.json", agency=None, purpose=None)
    assert status == 200
    assert doc["components"]["securitySchemes"]["AgencyKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key", "description": doc["components"]["securitySchemes"]["AgencyKey"]["description"]}
    assert set(doc["paths"]) == {"/v1/citizens/lookup", "/v1/citizens/search", "/v1/citizens/{master_id}", "/v1/citizens/{master_id}/lineage",
                                 "/v1/citizens/{master_id}/history", "/health"}
    lookup = doc["paths"]["/v1/citizens/lookup"]["post"]
    assert lookup["security"] == [{"AgencyKey": []}]
    assert any(p["name"] == "X-Purpose" and p["in"] == "header" for p in lookup["parameters"])
    assert "never in a URL: URLs are written to access logs" in " ".join(doc["info"]["description"].split())


@pytest.mark.stack
def test_every_read_is_audited_once_without_personal_data(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with psycopg.connect(api.dsn) as conn:
        before = conn.execute("SELECT coalesce(max(id), 0) FROM mpi.api_audit").fetchone()[0]  # type: ignore[index]
    calls: list[tuple[tuple[Any, ...], dict[str, Any], tuple[str, str, int, list[str]]]] = [
        (("POST", "/v1/citizens/lookup"), {"agency": "dinkes", "body": {"nik": NIK_SITI}}, ("dinkes", "/v1/citizens/lookup", 200, [C_SITI])),
        (("GET", f"/v1/citizens/{C_SITI_2}"), {"agency": "dinsos"}, ("dinsos", "/v1/citizens/{master_id}", 200, [C_SITI_2])),
        (("POST", "/v1/citizens/search"), {"agency": "disnaker", "body": {"name": "Siti Aminah", "birth_date": "1990-05-12"}},
         ("disnaker", "/v1/citizens/search", 200, sorted([C_SITI, C_SITI_2]))),
        (("GET", f"/v1/citizens/{C_SITI}/lineage"), {"agency": "dinkes"}, ("dinkes", "/v1/citizens/{master_id}/lineage", 200, [C_SITI])),
        (("GET", f"/v1/citizens/{C_SITI}/history"), {"agency": "dinkes"}, ("dinkes", "/v1/citizens/{master_id}/history", 200, [C_SITI])),
        (("POST", "/v1/citizens/lookup"), {"agency": None, "key": "wrong-key-0123456789", "body": {"nik": NIK_SITI}}, ("unknown", "/v1/citizens/lookup", 401, [])),
        (("POST", "/v1/citizens/lookup"), {"agency": "bps", "body": {"nik": NIK_SITI}}, ("bps", "/v1/citizens/lookup", 403, [])),
        (("GET", f"/v1/citizens/{C_SITI}"), {"agency": "dinkes", "purpose": None}, ("dinkes", "/v1/citizens/{master_id}", 400, [])),
        (("GET", "/v1/citizens/Cffffffffffffffffffff"), {"agency": "dinkes"}, ("dinkes", "/v1/citizens/{master_id}", 404, [])),
        (("POST", "/v1/citizens/lookup"), {"agency": "dinkes", "body": {"nik": "3673019999999999"}}, ("dinkes", "/v1/citizens/lookup", 404, [])),
        (("POST", "/v1/citizens/lookup"), {"agency": "dinkes", "body": {"nik": NIK_SITI[:8]}}, ("dinkes", "/v1/citizens/lookup", 422, [])),
        (("GET", "/v1/nowhere"), {"agency": "dinkes"}, ("unknown", "unmatched", 404, [])),
    ]
    for args, kwargs, (_, _, status, _) in calls:
        assert api.call(*args, **kwargs)[0] == status, (args, kwargs)
        api.call("GET", "/health", agency=None, purpose=None)  # not audited
    api.call("GET", "/openapi.json", agency=None, purpose=None)
    with urllib.request.urlopen(f"http://{api.config.api.host}:{api.config.api.port}/metrics", timeout=10) as response:
        served = response.read().decode()

    with psycopg.connect(api.dsn) as conn:
        rows = conn.execute(
            "SELECT agency, route, status, master_ids, method, purpose, fields FROM mpi.api_audit WHERE id > %s ORDER BY id", (before,)
        ).fetchall()
        dumped = conn.execute("SELECT coalesce(string_agg(row_to_json(a)::text, ' '), '') FROM mpi.api_audit a").fetchone()[0]  # type: ignore[index]
    assert [(a, r, s, sorted(m)) for a, r, s, m, *_ in rows] == [expected for _, _, expected in calls]
    assert rows[0][4:] == ("POST", PURPOSE, ["birth_date", "deceased", "master_id", "name", "nik", "phone", "sex"])
    assert rows[7][5] is None and rows[6][6] == []
    for value in PERSONAL:
        assert value not in dumped, f"{value!r} is in the audit table"
        assert value not in caplog.text, f"{value!r} is in the log"
        assert value not in served, f"{value!r} is in the metrics"
    assert not [record for record in caplog.records if record.name == "uvicorn.access"], "a request line was logged"

    metrics_url = f"http://{api.config.metrics.host}:{api.config.metrics.port + COMPONENT_PORT_OFFSETS['api']}/metrics"
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        scraped = response.read().decode()
    for text in (served, scraped):
        assert 'simpul_api_requests_total{agency="dinkes",route="/v1/citizens/lookup",status="200"}' in text
        assert 'simpul_api_requests_total{agency="unknown",route="/v1/citizens/lookup",status="401"}' in text
        assert 'simpul_api_request_duration_seconds_bucket{le="0.02",route="/v1/citizens/{master_id}"}' in text
        assert C_SITI not in text

