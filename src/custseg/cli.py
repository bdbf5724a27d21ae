"""The ``custseg`` command: a thin layer over :mod:`custseg.workflow`.

Each command parses its options, builds a :class:`~custseg.config.RunConfig` (a
config file and :meth:`~custseg.config.RunConfig.with_overrides`, where every value is
checked) or paths, calls one library function and prints what it returned. Every error custseg
raises on purpose becomes one ``Error: ...`` line on stderr and exit code 1
(``--debug`` shows the traceback instead). :func:`main` can be called from tests.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ._version import __version__
from .exceptions import ConfigError, CustsegError
from .io.atomic import commit_count

# rich_markup_mode=None: plain click help, so "[default: ...]" stays text (rich reads brackets as
# markup) and flags show no "<bool>" metavar.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, context_settings={"max_content_width": 110},
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


#: override of RunConfig.with_overrides -> the option that gives it, for error messages that name the option
_OPTION_NAMES = {"train": "--train", "test": "--test", "models_dir": "--models-dir", "results_dir": "--results-dir",
                 "n_clusters": "--clusters", "seed": "--seed", "id_column": "--id-column",
                 "label_column": "--label-column", "no_label": "--no-label", "na_values": "--na-values",
                 "k_min": "--min", "k_max": "--max", "k_selection__n_resamples": "--seeds",
                 "k_selection__silhouette_sample": "--silhouette-sample", "plots__figures": "--figures/--no-figures"}


def _config(config: Optional[Path], *, preset: Optional[str] = None, guided: bool = False,
            **overrides) -> "RunConfig":
    from .config import run_config

    return run_config(config, preset=preset, guided=guided, names=_OPTION_NAMES, **overrides)


@app.command()
def train(
    train: Optional[str] = typer.Option(None, "--train", help="Training table (CSV or Parquet) [default: data/raw/Train.csv]."),
    test: Optional[str] = typer.Option(None, "--test", help="New customers to assign (default: data/raw/Test.csv "
                                       "if --train is not given, else none)."),
    models_dir: Optional[str] = typer.Option(None, "--models-dir", help="Where the model goes [default: models]."),
    results_dir: Optional[str] = typer.Option(None, "--results-dir", help="Where results go [default: results]."),
    clusters: Optional[int] = typer.Option(None, "--clusters", "-k", help="Number of segments [default: 7]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed [default: 42]."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with any setting."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Settings to start from: 'reference' (the "
                                         "reference autoencoder), 'mixed' (mixed-type ensemble of 40), 'guided' "
                                         "[default: the config file's, else mixed]."),
    guided: bool = typer.Option(False, "--guided", help="Learn from the known segments too (guidance weight 2; "
                                "the mixed-type ensemble, preset 'guided' unless --preset or the config file names one)."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Column holding customer IDs."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="Column holding known segments."),
    no_label: bool = typer.Option(False, "--no-label", help="The table has no known segments: infer none."),
    na_values: List[str] = typer.Option([], "--na-values", help="Extra token read as missing (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final summary."),
    strict: bool = typer.Option(False, "--strict", help="Make label warnings (rare or near-duplicate known "
                                "segments) errors."),
    figures: Optional[bool] = typer.Option(None, "--figures/--no-figures", help="--no-figures: compute every "
                                           "table but draw no figure (results/plots/ and the report's pictures), "
                                           "a faster run [default: the config's plots.figures, else draw]."),
) -> None:
    """Fit the segmentation on a table, evaluate it, assign new customers, save model and results."""
    from .io.atomic import check_output_folders, output_lock
    from .persistence import MANIFEST
    from .workflow import load_tables, train as run_train, write_training_outputs

    cfg = _config(config, preset=preset, guided=guided, train=train, test=test, models_dir=models_dir,
                  results_dir=results_dir,
                  n_clusters=clusters, seed=seed, id_column=id_column, label_column=label_column,
                  na_values=na_values, no_label=no_label or None, plots__figures=figures)
    # every output location is checked, and locked, before the expensive work
    check_output_folders(cfg.models_dir, cfg.results_dir, marker=MANIFEST)
    with output_lock(cfg.models_dir, cfg.results_dir):
        tables = load_tables(cfg, strict=strict)
        if not quiet:
            _print_roles(tables[2], tables[0])
        _notes([*tables[2].warnings, *tables[2].exclusion_notes()], "Warning")
        bar = _EpochProgress(cfg.autoencoder.max_epochs, enabled=not quiet)
        with bar:
            result = run_train(cfg, progress=bar.update, echo=bar.echo, tables=tables)
        _notes(result.notices)
        written = write_training_outputs(result)
    _print_summary(result, written)


def _notes(lines, kind: str = "Note") -> None:
    """Sentences the user must see even under --quiet (they change what the output means)."""
    for line in lines:
        err.print(f"{kind}: {line}", markup=False, soft_wrap=True)


@app.command()
def predict(
    model: str = typer.Option("models", "--model", help="Model folder written by 'custseg train'."),
    input: str = typer.Option(..., "--input", help="Table of customers to assign (CSV or Parquet)."),
    output: str = typer.Option(..., "--output", help="CSV file to write."),
    na_values: List[str] = typer.Option([], "--na-values", help="Extra token read as missing (repeatable)."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Add a column P_Cluster_<c> per cluster."),
    strict: bool = typer.Option(False, "--strict", help="Stop with an error on out-of-range values, overflows, unseen categories or empty rows/columns."),
    unusual_above: Optional[float] = typer.Option(None, "--unusual-above", help="Training percentile of Novelty above "
                                                  "which a customer is Unusual [default: the model's "
                                                  "monitoring.unusual_percentile, 99]."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Column holding customer IDs (default: the "
                                            "training ID column, else one named like an ID)."),
    engine: str = typer.Option("local", "--engine", help="'local' (this process) or 'dask' (a Dask cluster: "
                               "--input may be a pattern such as 'parts/*.parquet', --output a folder)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address (tcp://host:8786); "
                                            "a local cluster when not given. With --engine dask only."),
    workers: int = typer.Option(2, "--workers", help="Worker processes of the local Dask cluster."),
    runtime: str = typer.Option("torch", "--runtime", help="'torch' (the model folder) or 'onnx' (a graph written "
                                "by 'custseg export'; give its path with --model)."),
) -> None:
    """Assign customers to segments with a saved model."""
    from .workflow import predict_file

    if engine not in ("local", "dask"):
        raise ConfigError(f"--engine must be 'local' or 'dask'. Got {engine!r} instead.")
    if runtime not in ("torch", "onnx"):
        raise ConfigError(f"--runtime must be 'torch' or 'onnx'. Got {runtime!r} instead.")
    if scheduler is not None and engine != "dask":
        raise ConfigError("--scheduler needs --engine dask")
    # what only the model folder's monitor computes: refused rather than silently left out
    monitor_options = [name for name, given in (("--strict", strict), ("--probabilities", probabilities),
                                                ("--unusual-above", unusual_above is not None)) if given]
    if monitor_options and (engine == "dask" or runtime == "onnx"):
        how = "--engine dask" if engine == "dask" else "--runtime onnx"
        raise ConfigError(f"{' and '.join(monitor_options)} need{'s' if len(monitor_options) == 1 else ''} the "
                          f"confidence and novelty columns, which {how} does not compute; leave out "
                          f"{' and '.join(monitor_options)}, or score with the model folder (plain 'custseg predict')")
    if engine == "dask":
        if runtime != "torch":
            raise ConfigError("--engine dask scores with the model folder: leave out --runtime onnx")
        from .distributed import predict_dask

        done = predict_dask(model, input, output, scheduler=scheduler, n_workers=workers, na_values=na_values,
                            id_column=id_column)
        out.print(f"Wrote {done.rows:,} rows from {len(done.parts)} part{'s' if len(done.parts) != 1 else ''} to "
                  f"{output} ({done.workers} Dask worker{'s' if done.workers != 1 else ''}, {done.scheduler}); "
                  "segment_profiles.csv: quartiles approximate", markup=False, soft_wrap=True)
        return
    if runtime == "onnx":
        from .export import predict_onnx_file

        scored = predict_onnx_file(model, input, output, na_values=na_values, id_column=id_column)
        _predict_notes(scored.id_notice, f"Wrote {len(scored.table):,} rows to {output} (onnxruntime)", None,
                       scored.extra_columns, scored.unseen_categories)
        return
    with _progress_bar() as progress:
        result = predict_file(model, input, output, na_values=na_values, id_column=id_column,
                              probabilities=probabilities, strict=strict, unusual_above=unusual_above,
                              progress=progress)
    _predict_notes(result.id_notice, f"Wrote {result.rows:,} rows to {output}", result.novelty,
                   result.extra_columns, result.unseen_categories)


def _predict_notes(id_notice, wrote: str, novelty, extra_columns, unseen_categories) -> None:
    """What predict says after writing, whichever runtime scored: IDs, rows, guards, ignored columns, unseen categories."""
    if id_notice:
        _notes([id_notice])
    out.print(wrote, markup=False, soft_wrap=True)
    if novelty is not None:  # unseen categories are listed per column below
        for line in novelty.lines(unseen=False):
            out.print(line, markup=False, soft_wrap=True)
    if extra_columns:
        out.print(f"Ignored columns not used by the model: {', '.join(extra_columns)}")
    for column, values in unseen_categories.items():
        shown = ", ".join(f"{_shortened(v)!r} x{n}" for v, n in list(values.items())[:5])
        out.print(f"Unseen categories in {column} (assigned the training mode): {shown}", markup=False,
                  soft_wrap=True)


def _shortened(value: str, limit: int = 60) -> str:
    """A value as a notice shows it: a 100,000-character category is cut, with its length said."""
    value = str(value)
    return value if len(value) <= limit else f"{value[:limit]}... ({len(value):,} characters)"


@contextlib.contextmanager
def _progress_bar():
    """A progress callback drawing rows scored and rows per second on stderr, if it is a terminal; else None."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    started = time.perf_counter()
    with Progress(TextColumn("scoring"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[rows]:,} rows, {task.fields[rate]:,.0f} rows/s"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("predict", total=1.0, rows=0, rate=0.0)

        def update(report) -> None:
            rate = report.rows / max(time.perf_counter() - started, 1e-9)
            bar.update(task, completed=report.fraction, rows=report.rows, rate=rate)

        yield update


@app.command()
def serve(
    model: str = typer.Option("models", "--model", help="Model folder written by 'custseg train'."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", help="Server processes, each with the model loaded once."),
    max_body_mb: float = typer.Option(32.0, "--max-body-mb", help="Larger request bodies get HTTP 413."),
) -> None:
    """Serve the model over HTTP: POST /predict, POST /predict/csv, GET /health, GET /model."""
    from .serve import serve as run_server

    if max_body_mb <= 0:
        raise ConfigError(f"--max-body-mb must be > 0. Got {max_body_mb} instead.")
    err.print(f"custseg {__version__}: serving {model} on http://{host}:{port} (Ctrl+C stops)", markup=False,
              soft_wrap=True)
    run_server(model, host=host, port=port, workers=workers, max_body_bytes=int(max_body_mb * 1024 * 1024))


@app.command()
def export(
    model: str = typer.Option("models", "--model", help="Model folder written by 'custseg train'."),
    onnx: str = typer.Option(..., "--onnx", help="ONNX file to write (e.g. segmenter.onnx)."),
) -> None:
    """Write the model as one ONNX graph: raw customer columns in; cluster, distances, segment out."""
    from .export import export_onnx

    done = export_onnx(model, onnx)
    out.print(f"Wrote {done.path} ({done.size_bytes:,} bytes): inputs {', '.join(done.inputs)}; "
              f"outputs {', '.join(done.outputs)}", markup=False, soft_wrap=True)


@app.command()
def report(
    models_dir: str = typer.Option("models", "--models-dir", help="Model folder written by 'custseg train'."),
    results_dir: str = typer.Option("results", "--results-dir", help="Results folder written by 'custseg train'."),
) -> None:
    """Write results/report.html again from what 'custseg train' wrote (the training table is not needed)."""
    from .io.atomic import recover
    from .workflow import rebuild_report

    recover(models_dir, results_dir)
    out.print(f"Wrote {rebuild_report(models_dir, results_dir)}", markup=False, soft_wrap=True)


@app.command()
def compare(
    train: Optional[str] = typer.Option(None, "--train", help="Training table with known segments [default: data/raw/Train.csv]."),
    test: Optional[str] = typer.Option(None, "--test", help="New customers; returning ones (ID in --train) are scored (default: data/raw/Test.csv if --train is not given, else none)."),
    clusters: Optional[int] = typer.Option(None, "--clusters", "-k", help="Number of clusters for every method [default: 7]."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Number of seeds per method: --seed, --seed + 1, ..."),
    seed: Optional[int] = typer.Option(None, "--seed", help="First seed [default: 42]."),
    output: str = typer.Option("results/comparison.csv", "--output", help="CSV to write; the .md summary and .png figure go beside it."),
    silhouette_sample: int = typer.Option(0, "--silhouette-sample", min=0, help="Silhouettes on this many rows (0 = all rows)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with any setting (autoencoder, K-Means)."),
    held_out: bool = typer.Option(True, "--held-out/--no-held-out", help="Also score the unsupervised methods on 5-fold held-out folds (5 more fits per method and seed; the guided one always is)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the table."),
) -> None:
    """Compare the autoencoder with baseline clusterings on the same data, k and seeds (5 seeds on 8,000 customers: about 35 minutes on a shared 2-core machine, 6 fits per method and seed)."""
    from .workflow import run_comparison, write_comparison

    cfg = _config(config, train=train, test=test, n_clusters=clusters, seed=seed)
    echo = _quiet_echo if quiet else _echo
    result = run_comparison(cfg, n_seeds=seeds, silhouette_sample=silhouette_sample or None, held_out_folds=held_out,
                            progress=echo)
    written = write_comparison(result, output, dpi=cfg.plots.dpi)
    out.print(result.to_markdown(), markup=False, soft_wrap=True)
    out.print("Wrote " + ", ".join(str(p) for p in written), markup=False, soft_wrap=True)


@app.command("select-k")
def select_k(
    train: Optional[str] = typer.Option(None, "--train", help="Training table [default: data/raw/Train.csv]."),
    k_min: Optional[int] = typer.Option(None, "--min", help="Smallest k scanned [default: 2]."),
    k_max: Optional[int] = typer.Option(None, "--max", help="Largest k scanned [default: 12]."),
    seeds: int = typer.Option(5, "--seeds", help="Bootstrap resamples per k for the stability (1 skips it; "
                              "train uses the config's k_selection.n_resamples)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the autoencoder and K-Means [default: 42]."),
    clusters: Optional[int] = typer.Option(None, "--clusters", "-k", help="The k asked for, compared with the recommendation [default: 7]."),
    results_dir: Optional[str] = typer.Option(None, "--results-dir", help="Where k_selection.csv and plots/k_selection.png go [default: results/select-k, beside a training run's results, never into them]."),
    silhouette_sample: int = typer.Option(0, "--silhouette-sample", help="Silhouettes on this many rows (0 = all rows)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with any setting."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the result."),
) -> None:
    """Scan k on the latent space of a freshly trained autoencoder and recommend one (the scan 'train' writes)."""
    from .workflow import check_scan_folder, run_k_selection, write_k_selection

    cfg = _config(config, train=train, results_dir=results_dir, n_clusters=clusters, seed=seed, k_min=k_min,
                  k_max=k_max, k_selection__n_resamples=seeds, k_selection__silhouette_sample=silhouette_sample)
    # a training run's results folder holds its own k scan: the scan of another network never replaces it
    folder = Path(cfg.results_dir) if results_dir is not None else Path(cfg.results_dir) / "select-k"
    check_scan_folder(folder)
    echo = _quiet_echo if quiet else _echo
    run = run_k_selection(cfg, progress=echo)
    written = write_k_selection(run, folder)
    grid = Table(title=f"k on the autoencoder's latent space ({run.n_customers:,} customers, seed {run.seed})",
                 title_justify="left")
    for name in ("k", "inertia", "silhouette", "Davies-\nBouldin", "Calinski-\nHarabasz", "stability", ""):
        grid.add_column(name, justify="right" if name else "left")
    for row in run.selection.table.itertuples(index=False):
        marks = [m for m, on in (("recommended", row.recommended), ("knee", row.knee),
                                 ("asked for", row.k == run.business_k)) if on]
        grid.add_row(str(row.k), f"{row.inertia:,.0f}", f"{row.silhouette:.3f}", f"{row.davies_bouldin:.3f}",
                     f"{row.calinski_harabasz:,.0f}", "n/a" if row.stability != row.stability else f"{row.stability:.2f}",
                     ", ".join(marks))
    out.print(grid)
    for line in run.summary_lines():
        out.print(line, markup=False, soft_wrap=True)
    out.print("Wrote " + ", ".join(str(p) for p in written), markup=False, soft_wrap=True)


@app.command()
def drift(
    reference: str = typer.Option(..., "--reference", help="Reference table, e.g. the training customers (CSV or Parquet)."),
    new: str = typer.Option(..., "--new", help="New customers to compare with the reference."),
    output: str = typer.Option("results", "--output", help="Folder for drift.csv, drift.md and plots/drift.png."),
    model: Optional[str] = typer.Option(None, "--model", help="Model folder: its column roles, and the shift in predicted segments."),
    na_values: List[str] = typer.Option([], "--na-values", help="Extra token read as missing (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the classifier test's folds and bootstrap."),
) -> None:
    """How the new customers differ from the reference: per feature, as a whole, by segment, returning customers."""
    from .workflow import drift_tables, write_drift

    report = drift_tables(reference, new, model_dir=model, na_values=na_values, random_state=seed)
    written = write_drift(report, output)
    for line in report.summary_lines():
        out.print(line, markup=False, soft_wrap=True)
    out.print("Wrote " + ", ".join(str(p) for p in written), markup=False, soft_wrap=True)


def _echo(message: str) -> None:
    err.print(message, markup=False, soft_wrap=True)


def _quiet_echo(message: str) -> None:
    return None


def _print_roles(schema, table) -> None:
    frame = table.frame
    missing = frame.isna()
    grid = Table(title=f"{table.source}: {len(frame):,} rows x {frame.shape[1]} columns; "
                       f"{int(missing.to_numpy().sum()):,} missing cells in {int(missing.any(axis=1).sum()):,} rows",
                 title_justify="left")
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
            # the reference autoencoder reports val_loss and lr; the mixed ensemble the members' mean loss
            shown = [f"{key} {record[key]:{fmt}}" for key, fmt in (("loss", ".4f"), ("val_loss", ".4f"), ("lr", ".2g"))
                     if key in record]
            self.bar.update(self.task, completed=record["epoch"], losses="  ".join(shown))

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
              f"{result.config.clustering.n_clusters} clusters, preset {result.config.preset}, "
              f"{s['duration_seconds']} s")
    def num(name: str, spec: str = ".3f") -> str:  # None where a metric is undefined (one cluster)
        return "n/a" if m.get(name) is None else format(m[name], spec)

    parts = [f"silhouette {num('silhouette')}", f"Davies-Bouldin {num('davies_bouldin')}",
             f"Calinski-Harabasz {num('calinski_harabasz', '.0f')}"]
    if "nmi" in m:
        parts += [f"ARI {num('ari')}", f"NMI {num('nmi')}", f"mapped accuracy {num('mapped_accuracy')}"]
    out.print("Metrics: " + ", ".join(parts))
    models = result.config.models_dir
    out.print(f"Model: {models}/ ({len(written['models'])} files); results: {result.config.results_dir}/ "
              f"({len(written['results'])} files)")


def _on_sigterm(signum, frame):  # pragma: no cover - exercised by a subprocess test
    raise KeyboardInterrupt


def run() -> int:
    """The ``custseg`` command: :func:`main`, then a Ctrl-C while the process exits is ignored (it would only
    print a traceback from the interpreter's shutdown, torch's atexit hooks)."""
    code = main()
    if _is_main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code instead of exiting."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _is_main_thread() else None
    commits = commit_count()  # a commit of this command's outputs comes after these
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = app(args=argv, prog_name="custseg", standalone_mode=False)
        if code == 130:  # typer turns KeyboardInterrupt into Exit(130) and returns its code
            raise KeyboardInterrupt
        _notes(_warning_sentences(caught))
        return code if isinstance(code, int) else 0
    except CustsegError as exc:
        if _state["debug"]:
            raise
        err.print(f"Error: {exc}", markup=False, soft_wrap=True)
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        if commit_count() > commits:  # Ctrl-C after this command's outputs were in place: say so
            err.print("Error: interrupted after the new model and results had been written; they are complete "
                      "and in place", soft_wrap=True)
        else:
            err.print("Error: interrupted; earlier models and results were left as they were", soft_wrap=True)
        return 130
    except Exception as exc:
        # click's usage errors (typer vendors click, so match them by shape, not by class)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code") and not _state["debug"]:
            err.print(f"Error: {exc.format_message()} (see '{_command_path(exc)} --help')", markup=False,
                      soft_wrap=True)
            return 1
        raise
    finally:
        _state["debug"] = False
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _command_path(exc: Exception) -> str:
    """``custseg train`` for an error in the train command's options, ``custseg`` before a command."""
    ctx = getattr(exc, "ctx", None)
    return getattr(ctx, "command_path", None) or "custseg"


def _warning_sentences(caught) -> list[str]:
    """Python warnings raised during a command, as one plain sentence each (no file, line or class path).

    Recorded rather than shown raw: a ConvergenceWarning or a RuntimeWarning from numpy
    means something to a developer, not to the analyst running the command.
    """
    sentences = []
    for w in caught:
        text = str(w.message).strip().splitlines()[0] if str(w.message).strip() else w.category.__name__
        kind = w.category.__name__
        if kind == "ConvergenceWarning":
            text = f"K-Means found fewer distinct groups than clusters asked for ({text}); consider fewer --clusters"
        elif "tight_layout" in text or "Tight layout" in text:
            text = "a figure's labels are too long for it to lay out neatly; the figure is still written"
        elif kind == "RuntimeWarning":
            text = f"a numeric computation met an undefined value ({text}); affected numbers are shown as n/a"
        if text not in sentences:
            sentences.append(text)
    return sentences


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
