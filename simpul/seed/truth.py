"""The truth: which resident each agency record describes. It never enters an agency database.

Files under ``truth_dir`` (gzip CSV with a header):

- ``persons.csv.gz``: ``person_id,nik,sex,birth_date`` for every generated resident;
- ``records.csv.gz``: ``source,table,record_key,person_id`` for every loaded row, ``record_key``
  being the row's primary key as text and ``table`` the qualified name from the config;
- ``persons.live.csv.gz`` and ``records.live.csv.gz``: the same for what the change generator
  created later. Each flush appends one gzip member, which gzip readers read as one stream.

Seed files are written byte-identically for the same seed (no timestamp in the gzip header).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO

PERSONS = "persons.csv.gz"
RECORDS = "records.csv.gz"
LIVE_PERSONS = "persons.live.csv.gz"
LIVE_RECORDS = "records.live.csv.gz"
PERSON_HEADER = ("person_id", "nik", "sex", "birth_date")
RECORD_HEADER = ("source", "table", "record_key", "person_id")


@dataclass(frozen=True)
class TruthRecord:
    """One agency row and the resident it describes."""

    source: str
    table: str
    record_key: str
    person_id: int


@dataclass(frozen=True)
class TruthPerson:
    """One resident's identity as generated."""

    person_id: int
    nik: str
    sex: str
    birth_date: date


class _GzipCsv:
    """A gzip CSV file written reproducibly: no name or modification time in its header."""

    def __init__(self, path: Path, header: tuple[str, ...]) -> None:
        self.raw = path.open("wb")
        self.gz = gzip.GzipFile(filename="", mode="wb", fileobj=self.raw, mtime=0, compresslevel=6)
        self.text: IO[str] = io.TextIOWrapper(self.gz, encoding="utf-8", newline="")
        self.writer = csv.writer(self.text, lineterminator="\n")
        self.writer.writerow(header)

    def close(self) -> None:
        self.text.close()
        self.raw.close()


class TruthWriter:
    """Writes a seed's truth to temporary files and puts them in place on :meth:`commit`."""

    def __init__(self, truth_dir: Path) -> None:
        self.truth_dir = truth_dir
        truth_dir.mkdir(parents=True, exist_ok=True)
        self._persons = _GzipCsv(truth_dir / f"{PERSONS}.tmp", PERSON_HEADER)
        self._records = _GzipCsv(truth_dir / f"{RECORDS}.tmp", RECORD_HEADER)
        self.counts: dict[str, int] = {}

    def person(self, person_id: int, nik: str, sex: str, birth_date: date) -> None:
        """Add one generated resident."""
        self._persons.writer.writerow((person_id, nik, sex, birth_date.isoformat()))

    def record(self, source: str, table: str, record_key: object, person_id: int) -> None:
        """Add one loaded agency row."""
        self._records.writer.writerow((source, table, record_key, person_id))
        self.counts[table] = self.counts.get(table, 0) + 1

    def commit(self) -> Path:
        """Close the files and replace the previous truth (and its live additions) with them."""
        self._persons.close()
        self._records.close()
        for name in (LIVE_PERSONS, LIVE_RECORDS):
            (self.truth_dir / name).unlink(missing_ok=True)
        for name in (PERSONS, RECORDS):
            (self.truth_dir / f"{name}.tmp").replace(self.truth_dir / name)
        return self.truth_dir / RECORDS

    def abort(self) -> None:
        """Close and remove the temporary files, leaving the previous truth as it was."""
        self._persons.close()
        self._records.close()
        for name in (PERSONS, RECORDS):
            (self.truth_dir / f"{name}.tmp").unlink(missing_ok=True)


def append_live(truth_dir: Path, records: Iterable[TruthRecord], persons: Iterable[TruthPerson] = ()) -> None:
    """Append what the change generator created, as one more gzip member per file."""
    for name, header, rows in (
        (LIVE_RECORDS, RECORD_HEADER, [(r.source, r.table, r.record_key, r.person_id) for r in records]),
        (LIVE_PERSONS, PERSON_HEADER, [(p.person_id, p.nik, p.sex, p.birth_date.isoformat()) for p in persons]),
    ):
        if not rows:
            continue
        path = truth_dir / name
        new = not path.exists()
        with gzip.open(path, "at", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            if new:
                writer.writerow(header)
            writer.writerows(rows)


def _rows(path: Path) -> Iterator[list[str]]:
    if not path.exists():
        return
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        yield from reader


def read_records(truth_dir: Path) -> Iterator[TruthRecord]:
    """Every truth record: the seed's, then the live ones."""
    for name in (RECORDS, LIVE_RECORDS):
        for source, table, key, person_id in _rows(truth_dir / name):
            yield TruthRecord(source, table, key, int(person_id))


def read_persons(truth_dir: Path) -> Iterator[TruthPerson]:
    """Every resident: the seed's, then those born live."""
    for name in (PERSONS, LIVE_PERSONS):
        for person_id, nik, sex, birth in _rows(truth_dir / name):
            yield TruthPerson(int(person_id), nik, sex, date.fromisoformat(birth))
