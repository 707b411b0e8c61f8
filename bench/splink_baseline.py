"""Splink 5 on DuckDB as a comparison baseline for our entity resolver.

    .venv/bin/python -m bench.splink_baseline /tmp/er/records-200k.jsonl [--threshold 0.9]

Reads a JSONL file of canonical person records (as written by ``simpul er export``), deduplicates
them with Splink and prints pairwise precision, recall and F1 against the seed's truth
(``.simpul/truth``), plus the wall time. Needs the ``bench`` extra (``splink``, ``duckdb``).

The configuration is what a competent Splink user would write for this data after looking at it,
not a copy of our matcher and not tuned against the truth:

- ``link_type="dedupe_only"`` over all records in one table: the four agencies' tables are one
  population with duplicates within and across tables, so there is nothing to gain from
  ``link_and_dedupe`` per source.
- Comparisons (one per field, each with a null level so a missing value is neutral):

  - ``nik``: exact or not. No edit-distance levels, although NIKs are typed by hand: a NIK is
    region (6 digits) + birth date (DDMMYY, day + 40 for women) + a 4-digit serial, so two
    different people of the same kecamatan, birth date and sex have NIKs one or two edits apart
    (``...0001`` / ``...0002``). Levenshtein levels on NIK therefore mostly score such
    neighbours, not typos, and they duplicate the birth date and sex evidence. (Tried first, as
    exact / Damerau-Levenshtein <= 1 / <= 2: EM made "NIK within 2 edits + same birth date"
    its match class, and at 0.9 predicted 168k wrong pairs against 28k right ones.)
  - ``name``: Splink's ``NameComparison`` on the normalised full name: exact (with term-frequency
    adjustment, so "SITI AMINAH" agreeing says less than a rare name agreeing), Jaro-Winkler
    >= 0.92, >= 0.88, >= 0.7, else.
  - ``birth_date``: Splink's ``DateOfBirthComparison`` on the ISO string: exact, Levenshtein <= 1
    (a typed digit), within a month, a year, ten years, else; unparseable dates count as null.
  - ``sex``, ``kk`` (family card), ``phone``: exact match or not.
  - ``kelurahan``: exact with term-frequency adjustment (a large kelurahan agreeing is weaker
    evidence than a small one).

  ``kk`` and ``kelurahan`` are correlated (a family lives in one kelurahan) and family members
  share both; Fellegi-Sunter assumes independence, so those two over-count together. That is the
  standard Splink setup's known weakness, kept on purpose: the baseline is the usual setup.
- Blocking rules for prediction (union), as in our resolver: NIK's first 12 characters and its
  last 8 (two overlapping halves, so one mistyped digit in either half still meets); birth date +
  first 3 letters of the name; sorted name tokens + birth year (catches reordered names); phone;
  KK + birth year; kelurahan + birth year + name initial; and KK + full name, the only way a
  household-head row (``public.kartu_keluarga``, ``bansos.keluarga_penerima``: name, KK and
  address only, no NIK, birth date or sex) meets the person's own row.
- Training, in Splink's recommended order:

  - lambda (``probability_two_random_records_match``) from two deterministic rules, "same NIK"
    and "same KK and same full name" (a family card rarely lists two people of one name), with an
    assumed recall of 0.8 (a guess: a fifth of the records have no usable NIK, and a name can be
    spelt differently on two rows);
  - u by random sampling (``estimate_u_using_random_sampling``, 5 million pairs, fixed seed):
    random pairs are almost all non-matches;
  - m by two EM sessions, blocked on the full name (trains all but name) and on the birth date
    (trains all but birth date), the usual "one session per identifying field" pattern. Blocks
    on NIK's first 12 characters would not do: they fix birth date and sex, so EM never sees
    those fields disagree and cannot train their other levels.

  ``phone`` is empty in the current seed's exports, so Splink warns that its u values are not
  trained; an all-null comparison only ever takes the null level (weight 0), so it is harmless
  and kept for data that has phones.
- Clustering: ``cluster_pairwise_predictions_at_threshold`` (connected components) over the
  predicted pairs with match probability >= ``threshold`` (0.9 by default).

Timing: ``load_seconds`` is reading the JSONL into a DuckDB table; ``seconds`` is everything
after (building the linker, training, prediction, clustering and reading the clusters back).
DuckDB runs in memory with its spill directory in ``work_dir``; the trained model is written
there as ``splink_model.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import splink
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from simpul.er_offline import read_truth
from simpul.streams.evaluation import pair_counts

TRUTH_DIR = Path(__file__).resolve().parent.parent / ".simpul" / "truth"

# The record fields the model reads, with the types DuckDB should give them (set explicitly:
# inference would type an all-null column such as ``phone`` as NULL).
_COLUMNS: dict[str, str] = {
    "source": "VARCHAR",
    "table": "VARCHAR",
    "record_key": "VARCHAR",
    "nik": "VARCHAR",
    "name": "VARCHAR",
    "name_tokens": "VARCHAR[]",
    "birth_date": "VARCHAR",
    "sex": "VARCHAR",
    "kelurahan": "VARCHAR",
    "kk": "VARCHAR",
    "phone": "VARCHAR",
}

_TABLE = "records"
_U_MAX_PAIRS = 5e6
_SEED = 42
_DETERMINISTIC_RECALL = 0.8


@dataclass(frozen=True)
class SplinkResult:
    """One Splink run: the clusters, its timings and the trained model."""

    clusters: dict[str, str]  # record id → cluster id, every input record
    seconds: float  # training + prediction + clustering
    load_seconds: float  # reading the JSONL into DuckDB
    settings: dict[str, Any]  # the Splink model as used (settings and trained m/u), JSON-ready
    threshold_match_probability: float


def _settings() -> SettingsCreator:
    """The Splink model specification (see the module docstring for each choice)."""
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=[
            cl.ExactMatch("nik"),
            cl.NameComparison("name"),
            cl.DateOfBirthComparison("birth_date", input_is_string=True),
            cl.ExactMatch("sex"),
            cl.ExactMatch("kelurahan").configure(term_frequency_adjustments=True),
            cl.ExactMatch("kk"),
            cl.ExactMatch("phone"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("substr(nik, 1, 12)"),
            block_on("substr(nik, 9, 8)"),
            block_on("birth_date", "substr(name, 1, 3)"),
            block_on("array_to_string(list_sort(name_tokens), ' ')", "substr(birth_date, 1, 4)"),
            block_on("phone"),
            block_on("kk", "substr(birth_date, 1, 4)"),
            block_on("kelurahan", "substr(birth_date, 1, 4)", "substr(name, 1, 1)"),
            block_on("kk", "name"),
        ],
        retain_matching_columns=False,
    )


def _load(con: duckdb.DuckDBPyConnection, records_path: Path) -> None:
    """Read the JSONL into table ``records`` with ``unique_id`` = ``source:table:record_key``."""
    columns = ", ".join(f"'{name}': '{kind}'" for name, kind in _COLUMNS.items())
    con.execute(
        f"""
        CREATE TABLE {_TABLE} AS
        SELECT source || ':' || "table" || ':' || record_key AS unique_id,
               nik, name, name_tokens, birth_date, sex, kelurahan, kk, phone
        FROM read_json(?, format = 'newline_delimited', columns = {{{columns}}})
        """,
        [str(records_path)],
    )


def run_splink(records_path: Path, work_dir: Path, threshold: float = 0.9) -> SplinkResult:
    """Deduplicate the records in ``records_path`` with Splink on DuckDB, clustering at ``threshold``.

    ``threshold`` is a match probability: pairs scoring at or above it are linked, and clusters
    are the connected components of the links. ``work_dir`` holds DuckDB's spill files and the
    trained model (``splink_model.json``).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    con.execute("SET temp_directory = ?", [str(work_dir / "duckdb_tmp")])

    started = time.perf_counter()
    _load(con, records_path)
    load_seconds = time.perf_counter() - started

    started = time.perf_counter()
    db_api = DuckDBAPI(connection=con)
    records = db_api.register(_TABLE, dataset_display_name="records")
    linker = Linker(records, _settings(), log_level=None)

    linker.training.estimate_probability_two_random_records_match(
        [block_on("nik"), block_on("kk", "name")], recall=_DETERMINISTIC_RECALL
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=_U_MAX_PAIRS, seed=_SEED)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("name"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("birth_date"))

    predictions = linker.inference.predict(threshold_match_probability=threshold)
    clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=threshold
    )
    rows = clustered.as_duckdbpyrelation().select("unique_id, cluster_id").fetchall()
    clusters = {str(unique_id): str(cluster_id) for unique_id, cluster_id in rows}
    seconds = time.perf_counter() - started

    model = linker.misc.save_model_to_json(str(work_dir / "splink_model.json"), overwrite=True)
    con.close()
    return SplinkResult(
        clusters=clusters,
        seconds=seconds,
        load_seconds=load_seconds,
        settings=model,
        threshold_match_probability=threshold,
    )


def main(argv: list[str] | None = None) -> None:
    """Run Splink on a records file and print its pairwise scores against the seed's truth."""
    parser = argparse.ArgumentParser(description="Splink 5 on DuckDB as a baseline for our entity resolver.")
    parser.add_argument("records", type=Path, help="JSONL of canonical person records")
    parser.add_argument("--threshold", type=float, default=0.9, help="match probability to link at")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    with tempfile.TemporaryDirectory(prefix="simpul-splink-") as work_dir:
        result = run_splink(args.records, Path(work_dir), args.threshold)
    truth = read_truth(TRUTH_DIR)
    counts = pair_counts(result.clusters, truth)
    print(
        json.dumps(
            {
                "splink_version": splink.__version__,
                "duckdb_version": duckdb.__version__,
                "records": len(result.clusters),
                "records_in_truth": counts.records,
                "threshold_match_probability": result.threshold_match_probability,
                "precision": round(counts.precision, 4),
                "recall": round(counts.recall, 4),
                "f1": round(counts.f1, 4),
                "true_positive_pairs": counts.true_positive,
                "predicted_pairs": counts.predicted,
                "true_pairs": counts.actual,
                "load_seconds": round(result.load_seconds, 2),
                "seconds": round(result.seconds, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
