"""The ``simpul`` command line: one entry point for the stack, the seed and the main job.

Expected problems (bad config, a busy port, a missing binary) end the command with one clear line
on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from simpul.config import ConfigError, SimpulConfig, load_config, load_env_file
from simpul.supervisor import die_with_parent

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Simpul: the integration backbone for Kota Serang's agency databases.")
stack_app = typer.Typer(no_args_is_help=True, help="The local stack of real servers (Kafka, PostgreSQL, MariaDB, schema registry, Prometheus).")
seed_app = typer.Typer(help="The synthetic Kota Serang: agency databases with a known truth.", invoke_without_command=True)
config_app = typer.Typer(no_args_is_help=True, help="The configuration file.")
registry_app = typer.Typer(no_args_is_help=True, help="Simpul's own Confluent-compatible schema registry.")
cdc_app = typer.Typer(no_args_is_help=True, help="Change-data capture from agency databases into Kafka.")
streams_app = typer.Typer(no_args_is_help=True, help="The stream processors: agency changes to golden citizen records.")
er_app = typer.Typer(no_args_is_help=True, help="Entity resolution offline: export canonical records, resolve, evaluate.")
sink_app = typer.Typer(no_args_is_help=True, help="The sinks: the master citizen index and the write-back to agencies.")
api_app = typer.Typer(no_args_is_help=True, help="The lookup API over the master citizen index.")
app.add_typer(stack_app, name="stack")
app.add_typer(seed_app, name="seed")
app.add_typer(config_app, name="config")
app.add_typer(registry_app, name="registry")
app.add_typer(cdc_app, name="cdc")
app.add_typer(streams_app, name="streams")
app.add_typer(er_app, name="er")
app.add_typer(sink_app, name="sink")
app.add_typer(api_app, name="api")

err = Console(stderr=True)
out = Console()

ConfigOption = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="Config file (default $SIMPUL_CONFIG or ./simpul.yaml).")
]


class _State:
    config_file: Optional[Path] = None


def _config() -> SimpulConfig:
    """The validated config, with the local stack's generated secrets in the environment."""
    config = load_config(_State.config_file)
    load_env_file(config.home / "stack.env")
    return config


@app.callback()
def _main(config: ConfigOption = None) -> None:
    _State.config_file = config
    die_with_parent()
    level = os.environ.get("SIMPUL_LOG_LEVEL", "INFO").upper()
    if level not in logging.getLevelNamesMapping():
        raise ConfigError(f"SIMPUL_LOG_LEVEL: unknown level {level!r} (use DEBUG, INFO, WARNING or ERROR)")
    # Log lines carry counts, positions and names of tables, never personal data.
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The registry client logs every HTTP request at INFO.
    logging.getLogger("httpx2").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``5m`` or ``1h``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise typer.BadParameter(f"expected a duration such as 60s, 5m or 1h, got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def _print_services(statuses: list) -> None:
    table = Table("service", "state", "pid", "address", "detail")
    for s in statuses:
        state = "[green]running" if s.running else "[red]stopped"
        table.add_row(s.name, state, str(s.pid or "-"), s.address, s.detail)
    out.print(table)


# --- config ------------------------------------------------------------------------------------


@config_app.command("check")
def config_check() -> None:
    """Validate the config file, including that every secret's environment variable is set."""
    config = _config()
    for source in config.sources:
        source.dsn()
    config.sinks.master_index.dsn()
    out.print(f"config OK: {len(config.sources)} sources ({', '.join(s.name for s in config.sources)})")


# --- stack -------------------------------------------------------------------------------------


@stack_app.command("up")
def stack_up(
    kafka_nodes: Annotated[Optional[int], typer.Option(help="Kafka nodes (default stack.kafka.nodes).", min=1, max=5)] = None,
) -> None:
    """Start (or keep) Kafka, PostgreSQL and MariaDB on loopback; idempotent."""
    from simpul.stack import LocalStack

    _print_services(LocalStack(_config()).up(kafka_nodes=kafka_nodes))


@stack_app.command("down")
def stack_down() -> None:
    """Stop what this stack started, and nothing else."""
    from simpul.stack import LocalStack

    stopped = LocalStack(_config()).down()
    out.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@stack_app.command("status")
def stack_status() -> None:
    """Show what runs where."""
    from simpul.stack import LocalStack

    _print_services(LocalStack(_config()).status())


# --- seed --------------------------------------------------------------------------------------


@seed_app.callback()
def seed(
    ctx: typer.Context,
    citizens: Annotated[Optional[int], typer.Option(help="Residents to generate (default seed.citizens, the whole city).", min=10)] = None,
    seed_value: Annotated[Optional[int], typer.Option("--seed", help="Random seed (default seed.seed).")] = None,
    if_empty: Annotated[bool, typer.Option("--if-empty", help="Do nothing when the agency databases already hold data.")] = False,
) -> None:
    """Load the agency databases with a synthetic Kota Serang and write the truth file."""
    if ctx.invoked_subcommand is not None:
        return
    from simpul.seed import is_seeded, seed_city

    config = _config()
    if if_empty and is_seeded(config):
        out.print("agency databases already seeded; nothing to do")
        return
    summary = seed_city(
        config,
        citizens=citizens or config.seed.citizens,
        seed=config.seed.seed if seed_value is None else seed_value,
        truth_dir=config.home / "truth",
    )
    table = Table("agency table", "rows")
    for name, rows in summary.records.items():
        table.add_row(name, f"{rows:,}")
    out.print(table)
    out.print(
        f"{summary.citizens:,} citizens in {summary.households:,} households seeded in {summary.seconds:.1f}s; "
        f"truth in {summary.truth_path}"
    )


@seed_app.command("changes")
def seed_changes(
    rate: Annotated[float, typer.Option(help="Changes per second.", min=0.1)] = 20.0,
    duration: Annotated[Optional[str], typer.Option("--for", help="Stop after this long (e.g. 60s); default until Ctrl-C.")] = None,
    seed_value: Annotated[Optional[int], typer.Option("--seed", help="Random seed (default seed.seed).")] = None,
) -> None:
    """Apply live changes (births, deaths, moves, corrections, registrations) to the agency databases."""
    from simpul.metrics import metrics_port, serve_metrics
    from simpul.seed import ChangeGenerator
    from simpul.shutdown import Shutdown

    config = _config()
    serve_metrics(config.metrics.host, metrics_port(config, "changegen"))
    generator = ChangeGenerator(config, seed=config.seed.seed if seed_value is None else seed_value, truth_dir=config.home / "truth")
    summary = generator.run(rate, Shutdown().install(), parse_duration(duration) if duration else None)
    out.print(summary)


# --- schema registry ---------------------------------------------------------------------------


@registry_app.command("run")
def registry_run() -> None:
    """Serve the schema registry at schema_registry.url, storing schemas in schema_registry.topic."""
    from simpul.schemas.registry.server import run_registry
    from simpul.shutdown import Shutdown

    config = _config()
    run_registry(config, Shutdown().install(), topic=config.schema_registry.topic)


# --- change-data capture ------------------------------------------------------------------------


@cdc_app.command("run")
def cdc_run(source: Annotated[str, typer.Option("--source", "-s", help="The source (sources[].name) to capture.")]) -> None:
    """Run one source's connector: snapshot as its snapshot_mode says, then stream, until SIGTERM."""
    from simpul.cdc.runner import run_connector
    from simpul.shutdown import Shutdown

    run_connector(_config(), source, Shutdown().install())


# --- entity resolution offline ------------------------------------------------------------------


@er_app.command("export")
def er_export(
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file of canonical records to write.")],
    limit: Annotated[Optional[int], typer.Option(help="At most this many records, shared across tables by their size.", min=1)] = None,
    mapping_file: Annotated[Optional[Path], typer.Option("--mapping", help="Mapping YAML (default: the shipped Kota Serang one).")] = None,
) -> None:
    """Read the configured agency databases through the mapping into canonical records (JSONL)."""
    from simpul.er_offline import export_records
    from simpul.streams.mapping import load_mapping

    config = _config()
    counts = export_records(config, load_mapping(mapping_file), output, limit)
    table = Table("agency table", "records", "quality notes")
    for name, (rows, notes) in counts.items():
        table.add_row(name, f"{rows:,}", ", ".join(f"{code} {n:,}" for code, n in notes.most_common(6)) or "-")
    out.print(table)
    out.print(f"{sum(rows for rows, _ in counts.values()):,} canonical records written to {output}")


@er_app.command("resolve")
def er_resolve(
    input_file: Annotated[Path, typer.Option("--input", "-i", help="JSONL of canonical records (from `simpul er export`).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file: each record's cluster.")],
    settings_file: Annotated[Optional[Path], typer.Option("--settings", help="Match settings (YAML/JSON), or estimates written by --estimates.")] = None,
    reviews: Annotated[Optional[Path], typer.Option(help="JSONL file for review pairs with their explanation.")] = None,
    links: Annotated[Optional[Path], typer.Option(help="JSONL file for the links made (rule or score).")] = None,
    estimates: Annotated[Optional[Path], typer.Option(help="JSON file for the model's estimates (reusable as --settings).")] = None,
) -> None:
    """Resolve canonical records into clusters with the matching engine; print a summary."""
    from simpul.er_offline import load_model, read_records, write_resolution
    from simpul.streams.resolve import resolve

    model = load_model(settings_file)
    records = read_records(input_file)
    resolution = resolve(records, model=model)
    write_resolution(resolution, records, output, reviews, links, estimates)
    _print_resolution(resolution, len(records))


@er_app.command("train")
def er_train(
    limit: Annotated[Optional[int], typer.Option(min=1, help="Train on at most this many records (shared across tables).")] = None,
    settings_file: Annotated[Optional[Path], typer.Option("--settings", help="Match settings to train (default: Indonesian citizen data).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Estimates file (default: processors.estimates).")] = None,
) -> None:
    """Estimate the match model on the agency databases (export, then resolve) for the stream processors."""
    from simpul.er_offline import train_estimates

    config = _config()
    target = output or config.estimates_path
    resolution, records = train_estimates(config, target, limit, settings_file)
    _print_resolution(resolution, records)
    out.print(f"estimates written to {target}")


def _print_resolution(resolution: Any, records: int) -> None:
    summary = Table("figure", "value")
    summary.add_row("records", f"{records:,}")
    summary.add_row("clusters", f"{resolution.cluster_count:,}")
    summary.add_row("candidate pairs", f"{resolution.candidate_pairs:,}")
    summary.add_row("blocks skipped as too large", f"{resolution.skipped_blocks:,}")
    for rule, n in resolution.links_by_rule.items():
        summary.add_row(f"merges by {rule}", f"{n:,}")
    summary.add_row("review pairs", f"{len(resolution.reviews):,}")
    if resolution.em is not None:
        summary.add_row("model", f"estimated on the input ({resolution.em.n_distinct_vectors:,} distinct comparison vectors)")
    summary.add_row("lambda (chance two random records match)", f"{resolution.model.lambda_:.4f}")
    out.print(summary)
    levels = Table("comparison", "level", "m", "u", "weight (bits)")
    for name, rows in resolution.model.parameters()["comparisons"].items():
        for row in rows:
            levels.add_row(name, row["label"], f"{row['m']:.4f}", f"{row['u']:.6f}", f"{row['weight']:+.2f}")
    out.print(levels)


@streams_app.command("run")
def streams_run(
    role: Annotated[Optional[str], typer.Option(help="Run one role in this process: router or resolver (default: both, as child processes).")] = None,
    loglevel: Annotated[str, typer.Option(help="Faust log level: crit, error, warn, info, debug.")] = "warn",
) -> None:
    """Run the stream processors (router and resolver) until stopped."""
    from simpul.streams.app import run_all, run_worker

    if role is None:
        run_all(_config(), loglevel)
    else:
        run_worker(_config(), role, loglevel)


@sink_app.command("run")
def sink_run(which: Annotated[str, typer.Argument(help="master-index or writeback.")]) -> None:
    """Run a sink until stopped: each batch commits in one transaction with the offsets it consumed."""
    from simpul.shutdown import Shutdown
    from simpul.sinks.service import run_sink

    run_sink(_config(), which, Shutdown().install())


@api_app.command("run")
def api_run() -> None:
    """Serve the lookup API on api.host:api.port until stopped."""
    from simpul.api.server import run_api
    from simpul.shutdown import Shutdown

    run_api(_config(), Shutdown().install())


@er_app.command("evaluate")
def er_evaluate(
    clusters: Annotated[Path, typer.Option(help="JSONL written by `simpul er resolve --output`.")],
    truth_dir: Annotated[Optional[Path], typer.Option(help="Truth folder (default <stack home>/truth).")] = None,
    links: Annotated[Optional[Path], typer.Option(help="Links JSONL, for auto-link precision.")] = None,
    reviews: Annotated[Optional[Path], typer.Option(help="Review pairs JSONL, for the review fraction.")] = None,
) -> None:
    """Pairwise precision, recall and F1 of the clusters against the seed's truth."""
    from simpul.er_offline import read_clusters, read_pairs, read_truth
    from simpul.streams.evaluation import evaluate

    truth = read_truth(truth_dir or _config().home / "truth")
    result = evaluate(
        read_clusters(clusters), truth, read_pairs(links) if links else None, read_pairs(reviews) if reviews else None
    )
    table = Table("figure", "value")
    table.add_row("records judged", f"{result.pairs.records:,}")
    table.add_row("predicted pairs", f"{result.pairs.predicted:,}")
    table.add_row("true pairs", f"{result.pairs.actual:,}")
    table.add_row("precision", f"{result.pairs.precision:.4f}")
    table.add_row("recall", f"{result.pairs.recall:.4f}")
    table.add_row("F1", f"{result.pairs.f1:.4f}")
    if result.auto_links is not None:
        table.add_row("auto-link precision", f"{result.auto_links.precision:.4f} of {result.auto_links.judged:,} links")
    if result.reviews is not None:
        table.add_row("review pairs that are matches", f"{result.reviews.precision:.4f} of {result.reviews.judged:,}")
    if result.review_fraction is not None:
        table.add_row("review fraction", f"{result.review_fraction:.4f}")
    out.print(table)


# --- the main job ------------------------------------------------------------------------------


@app.command("run")
def run(
    duration: Annotated[Optional[str], typer.Option("--for", help="End by itself after this long (e.g. 60s) with a summary.")] = None,
    rate: Annotated[float, typer.Option(help="Live changes per second applied to the agency databases.", min=0.1)] = 20.0,
) -> None:
    """The main job on the local stack: stack up, seed if empty, live changes, live status."""
    from simpul.mainjob import MainJob

    MainJob(_config(), console=out).run(rate=rate, duration_s=parse_duration(duration) if duration else None)


def main() -> None:
    """Entry point of the ``simpul`` command."""
    from simpul.cdc.errors import ConnectorError
    from simpul.stack import StackError
    from simpul.streams.mapping import MappingError

    try:
        app()
    except (ConfigError, StackError, ConnectorError, MappingError) as exc:
        err.print(f"[bold red]simpul:[/] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
