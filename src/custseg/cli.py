"""The ``custseg`` command: a thin layer over :mod:`custseg.workflow`.

Each command parses its options, builds a :class:`~custseg.config.RunConfig` or
paths, calls one library function and prints what it returned. Every error custseg
raises on purpose becomes one ``Error: ...`` line on stderr and exit code 1
(``--debug`` shows the traceback instead). :func:`main` can be called from tests.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .exceptions import ConfigError, CustsegError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Customer segmentation with an autoencoder and K-Means.")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        out.print(f"custseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    _state["debug"] = debug


def _config(config: Optional[Path], **overrides) -> "RunConfig":
    from .config import RunConfig, load_config

    cfg = load_config(config) if config is not None else RunConfig()
    data_fields = {f.name for f in dataclasses.fields(cfg.data)}
    for key, value in overrides.items():
        if value is None or value == []:
            continue
        if key in data_fields:
            setattr(cfg.data, key, value)
        elif key == "n_clusters":
            cfg.clustering.n_clusters = value
        else:
            setattr(cfg, key, value)
    return cfg.validate()


def _positive_k(value: Optional[int]) -> Optional[int]:
    if value is not None and value < 1:
        raise ConfigError(f"--clusters must be an int >= 1. Got {value} instead.")
    return value


@app.command()
def train(
    train: Optional[str] = typer.Option(None, "--train", help="Training table (CSV or Parquet) [default: data/raw/Train.csv]."),
    test: Optional[str] = typer.Option(None, "--test", help="New customers to assign [default: data/raw/Test.csv]."),
    models_dir: Optional[str] = typer.Option(None, "--models-dir", help="Where the model goes [default: models]."),
    results_dir: Optional[str] = typer.Option(None, "--results-dir", help="Where results go [default: results]."),
    clusters: Optional[int] = typer.Option(None, "--clusters", "-k", help="Number of segments [default: 7]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed [default: 42]."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with any setting."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Column holding customer IDs."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="Column holding known segments."),
    na_values: List[str] = typer.Option([], "--na-values", help="Extra token read as missing (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final summary."),
) -> None:
    """Fit the segmentation on a table, evaluate it, assign new customers, save model and results."""
    from .workflow import load_tables, train as run_train, write_training_outputs

    _positive_k(clusters)
    cfg = _config(config, train=train, test=test, models_dir=models_dir, results_dir=results_dir,
                  n_clusters=clusters, seed=seed, id_column=id_column, label_column=label_column,
                  na_values=na_values)
    tables = load_tables(cfg)
    if not quiet:
        _print_roles(tables[2], tables[0])
    bar = _EpochProgress(cfg.autoencoder.max_epochs, enabled=not quiet)
    with bar:
        result = run_train(cfg, progress=bar.update, echo=bar.echo, tables=tables)
    written = write_training_outputs(result)
    _print_summary(result, written)


@app.command()
def predict(
    model: str = typer.Option("models", "--model", help="Model folder written by 'custseg train'."),
    input: str = typer.Option(..., "--input", help="Table of customers to assign (CSV or Parquet)."),
    output: str = typer.Option(..., "--output", help="CSV file to write."),
    na_values: List[str] = typer.Option([], "--na-values", help="Extra token read as missing (repeatable)."),
) -> None:
    """Assign customers to segments with a saved model."""
    from .workflow import predict_file

    result = predict_file(model, input, output, na_values=na_values)
    out.print(f"Wrote {len(result.table):,} rows to {output}")
    if result.extra_columns:
        out.print(f"Ignored columns not used by the model: {', '.join(result.extra_columns)}")
    for column, values in result.unseen_categories.items():
        shown = ", ".join(f"{v!r} x{n}" for v, n in list(values.items())[:5])
        out.print(f"Unseen categories in {column} (assigned the training mode): {shown}")


@app.command()
def report(
    models_dir: str = typer.Option("models", "--models-dir", help="Model folder written by 'custseg train'."),
    results_dir: str = typer.Option("results", "--results-dir", help="Results folder written by 'custseg train'."),
) -> None:
    """Write results/report.html: one self-contained page describing the run and its segments."""
    from .report import build_report

    out.print(f"Wrote {build_report(models_dir, results_dir)}")


def _print_roles(schema, table) -> None:
    grid = Table(title=f"Columns of {table.source}", title_justify="left")
    for name in ("column", "role", "type", "missing", "distinct", "reason"):
        grid.add_column(name)
    for row in schema.roles_table().itertuples(index=False):
        reason = row.reason
        if row.column in table.numeric_from_text:
            reason += f"; {table.numeric_from_text[row.column]}"
        grid.add_row(str(row.column), row.role, row.type, f"{row.missing:,}", f"{row.distinct:,}", reason)
    err.print(grid)


class _EpochProgress:
    """A rich progress bar over epochs showing the current losses; closed by the first message after training."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.enabled, self.bar = total, enabled, None

    def __enter__(self) -> "_EpochProgress":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("autoencoder"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("{task.fields[losses]}"), console=err)
            self.bar.start()
            self.task = self.bar.add_task("epochs", total=self.total, losses="")
        return self

    def update(self, record: dict) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=record["epoch"],
                            losses=f"loss {record['loss']:.4f}  val_loss {record['val_loss']:.4f}  lr {record['lr']:.2g}")

    def echo(self, message: str) -> None:
        self.close()
        if self.enabled:
            err.print(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def _print_summary(result, written) -> None:
    s = result.summary
    m = s["metrics"]
    out.print(f"custseg {__version__}: {s['data']['train']['rows']:,} customers, "
              f"{result.config.clustering.n_clusters} clusters, {s['duration_seconds']} s")
    parts = [f"silhouette {m['silhouette']:.3f}", f"Davies-Bouldin {m['davies_bouldin']:.3f}",
             f"Calinski-Harabasz {m['calinski_harabasz']:.0f}"]
    if "nmi" in m:
        parts += [f"ARI {m['ari']:.3f}", f"NMI {m['nmi']:.3f}", f"mapped accuracy {m['mapped_accuracy']:.3f}"]
    out.print("Metrics: " + ", ".join(parts))
    models = result.config.models_dir
    out.print(f"Model: {models}/ ({len(written['models'])} files); results: {result.config.results_dir}/ "
              f"({len(written['results'])} files)")


def _on_sigterm(signum, frame):  # pragma: no cover - exercised by a subprocess test
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code instead of exiting."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _is_main_thread() else None
    try:
        app(args=argv, prog_name="custseg", standalone_mode=False)
        return 0
    except CustsegError as exc:
        if _state["debug"]:
            raise
        err.print(f"Error: {exc}", markup=False, soft_wrap=True)
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err.print("Error: interrupted; earlier models and results were left as they were", soft_wrap=True)
        return 130
    except Exception as exc:
        # click's usage errors (typer vendors click, so match them by shape, not by class)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code") and not _state["debug"]:
            err.print(f"Error: {exc.format_message()} (see 'custseg --help')", markup=False, soft_wrap=True)
            return 1
        raise
    finally:
        _state["debug"] = False
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
