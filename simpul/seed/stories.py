"""The main job's two stories of agencies connected, each applied as a real transaction and timed
until its result is in the other agency's own database:

- **registration**: a job seeker registers at Disnaker with the name and birth place typed with
  errors; the registration is linked to its Disdukcapil citizen and the verified fields arrive
  in Disnaker's ``simpul_citizen_ref``.
- **death**: Disdukcapil records the death of a citizen who receives social aid; life status
  ``deceased`` arrives in Dinsos's ``simpul_citizen_ref``.

Only ids, booleans and seconds are reported: never a name or a NIK.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import psycopg

from simpul.config import SimpulConfig
from simpul.databases import connect_mysql, connect_postgres
from simpul.seed.names import typo
from simpul.seed.population import WIB


@dataclass
class StoryResult:
    """How one story ended: what was checked, and how long after the source commit it held."""

    story: str
    detail: str
    latency_s: float | None = None

    @property
    def delivered(self) -> bool:
        """Whether the result reached the other agency's database."""
        return self.latency_s is not None


class AgencyStories:
    """Applies the stories to the configured agency databases and waits for their results."""

    def __init__(self, config: SimpulConfig, seed: int) -> None:
        self.config = config
        self.rng = random.Random(f"simpul-stories:{seed}")

    def _master(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.config.sinks.master_index.dsn(), autocommit=True)

    def registration(self, timeout_s: float) -> StoryResult:
        """A Disnaker registration typed with errors, linked and answered with verified fields."""
        story = "Disnaker registration typed with errors"
        today = date.today()
        with self._master() as master:
            row = master.execute(
                "SELECT c.master_id, l.record_key, c.name FROM mpi.citizen c JOIN mpi.record_link l ON l.master_id = c.master_id "
                "AND l.source = 'disdukcapil' AND l.table_name = 'public.penduduk' WHERE c.deceased IS NOT TRUE AND c.name IS NOT NULL "
                "AND c.birth_date BETWEEN %s AND %s AND NOT EXISTS (SELECT 1 FROM mpi.record_link d WHERE d.master_id = c.master_id "
                "AND d.source = 'disnaker') ORDER BY l.record_key LIMIT 1 OFFSET %s",
                (today - timedelta(days=55 * 365), today - timedelta(days=18 * 365), self.rng.randrange(50)),
            ).fetchone()
        if row is None:
            return StoryResult(story, "no adult citizen in the master index yet")
        master_id, nik, verified_name = row
        with connect_postgres(self.config.source("disdukcapil")) as registry:
            person = registry.execute(
                "SELECT p.nama_lengkap, p.jenis_kelamin, p.tempat_lahir, p.tanggal_lahir, k.alamat, k.rt, k.rw, k.kelurahan, k.kecamatan "
                "FROM public.penduduk p JOIN public.kartu_keluarga k USING (no_kk) WHERE p.nik = %s", (nik,),
            ).fetchone()
        if person is None:
            return StoryResult(story, "the chosen citizen left the registry meanwhile")
        name, sex, place, born, street, rt, rw, kelurahan, kecamatan = person
        typed_name = typo(name, self.rng)
        now = datetime.now(WIB).replace(tzinfo=None, microsecond=0)
        disnaker = connect_mysql(self.config.source("disnaker"))
        with disnaker, disnaker.cursor() as cursor:
            cursor.execute(
                "INSERT INTO ak1_pencari_kerja (no_pendaftaran, nik, nama, jk, tmp_lahir, tgl_lahir, alamat, kelurahan, kecamatan, no_hp, "
                "pendidikan, aktif, tgl_daftar, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, 'SMA', 1, %s, %s, %s)",
                (f"AK1/3673/{now.year}/D{self.rng.randrange(10**5):05d}", nik, typed_name, "L" if sex == "LAKI-LAKI" else "P",
                 typo((place or "SERANG").upper(), self.rng), born, f"{street} RT {rt} RW {rw}".upper(), kelurahan.upper(), kecamatan.upper(), now, now, now),
            )
            ak1_id = cursor.lastrowid
            disnaker.commit()
        found = self._wait(
            lambda: self._ref_row("disnaker", "disnaker.ak1_pencari_kerja", str(ak1_id), "master_id, name"), timeout_s,
        )
        if found is None:
            return StoryResult(story, f"AK/1 id {ak1_id}: no verified fields in disnaker.simpul_citizen_ref within {timeout_s:.0f} s")
        (delivered_master, delivered_name), latency = found
        linked = "linked to its Disdukcapil citizen" if delivered_master == master_id else "linked to another citizen"
        corrected = "the registry's spelling of the name delivered" if delivered_name == verified_name != typed_name else "name not corrected"
        return StoryResult(story, f"AK/1 id {ak1_id} {linked} ({delivered_master}); {corrected}", latency)

    def death(self, timeout_s: float) -> StoryResult:
        """A Disdukcapil death reaching Dinsos as life status."""
        story = "Disdukcapil death reaching Dinsos"
        with self._master() as master:
            row = master.execute(
                "SELECT c.master_id, r.record_key, a.record_key FROM mpi.citizen c "
                "JOIN mpi.record_link r ON r.master_id = c.master_id AND r.source = 'disdukcapil' AND r.table_name = 'public.penduduk' "
                "JOIN mpi.record_link a ON a.master_id = c.master_id AND a.source = 'dinsos' AND a.table_name = 'bansos.anggota_penerima' "
                "WHERE c.deceased IS NOT TRUE ORDER BY a.record_key LIMIT 1 OFFSET %s",
                (self.rng.randrange(50),),
            ).fetchone()
        if row is None:
            return StoryResult(story, "no aid recipient linked to the registry in the master index yet")
        master_id, nik, aid_key = row
        with connect_postgres(self.config.source("disdukcapil")) as registry:
            registry.execute(
                "UPDATE public.penduduk SET status_hidup = 'MATI', tanggal_kematian = %s, updated_at = %s WHERE nik = %s",
                (date.today(), datetime.now(WIB), nik),
            )
        found = self._wait(
            lambda: self._ref_row("dinsos", "bansos.anggota_penerima", aid_key, "deceased", "AND deceased"), timeout_s,
        )
        if found is None:
            return StoryResult(story, f"{master_id}: deceased not in dinsos.simpul_citizen_ref within {timeout_s:.0f} s")
        return StoryResult(story, f"{master_id}: the aid member record now reads deceased in dinsos.simpul_citizen_ref", found[1])

    def _ref_row(self, source_name: str, table: str, key: str, columns: str, condition: str = "") -> tuple[Any, ...] | None:
        source = self.config.source(source_name)
        query = f"SELECT {columns} FROM {source.feedback.table} WHERE record_table = %s AND record_key = %s {condition}"
        if source.kind == "postgres":
            with connect_postgres(source) as conn:
                try:
                    return conn.execute(query, (table, key)).fetchone()
                except psycopg.errors.UndefinedTable:
                    return None
        conn = connect_mysql(source)
        with conn, conn.cursor() as cursor:
            cursor.execute(query, (table, key))
            return cursor.fetchone()

    @staticmethod
    def _wait(probe: Any, timeout_s: float) -> tuple[Any, float] | None:
        """Poll ``probe`` until it returns a row; the row and the seconds since the call."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            row = probe()
            if row is not None:
                return row, time.monotonic() - started
            time.sleep(0.05)
        return None
