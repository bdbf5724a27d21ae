"""Generate a big customer table from the shipped data, for the scoring benchmarks.

Rows are sampled (with replacement, seeded) from ``data/raw/Train.csv`` and
``data/raw/Test.csv`` and given new, unique IDs; the known segment is left out, as
in a table of customers to score; with ``--train`` the rows come from Train.csv alone
and keep their known segment, as in a table to train on (the large-table training
benchmark). The table is written block by block (CSV or
Parquet), so a 20-million-row table needs no more memory than one block. Write it
outside the repository's ``data/`` folder::

    python benchmarks/gen_big_table.py --rows 1000000 --output /tmp/big_1m.csv
    python benchmarks/gen_big_table.py --rows 5000000 --output /tmp/big_5m.parquet
    python benchmarks/gen_big_table.py --rows 1000000 --output /tmp/big_train_1m.csv --train
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
SHIPPED = [REPO / "data" / "raw" / "Train.csv", REPO / "data" / "raw" / "Test.csv"]
#: rows per written block: bounds the generator's memory
BLOCK_ROWS = 500_000
#: new IDs start above the shipped ones, so they never collide with a training customer
FIRST_ID = 10_000_000


def shipped_rows(parquet: bool, train: bool = False) -> pa.Table:
    """The shipped customers without their known segment (``train``: Train.csv's, with it).

    For CSV the cells are kept as the text they are in the shipped files (so '0.0'
    stays '0.0' and empty cells stay empty); for Parquet columns get their types.
    """
    tables = []
    for path in SHIPPED[:1] if train else SHIPPED:
        if parquet:
            options = pacsv.ConvertOptions()
        else:
            head = path.open(encoding="utf-8").readline().strip().split(",")
            options = pacsv.ConvertOptions(column_types={c: pa.string() for c in head}, strings_can_be_null=True)
        table = pacsv.read_csv(path, convert_options=options)
        tables.append(table if train else table.drop_columns([c for c in table.column_names if c == "Segmentation"]))
    return pa.concat_tables(tables, promote_options="permissive")


def generate(rows: int, output: Path, seed: int = 0, block_rows: int = BLOCK_ROWS, train: bool = False) -> Path:
    """Write ``rows`` sampled customers with IDs FIRST_ID, FIRST_ID + 1, ... to ``output``."""
    parquet = output.suffix.lower() in {".parquet", ".pq"}
    source = shipped_rows(parquet, train)
    rng = np.random.default_rng(seed)
    id_type = pa.int64() if parquet else pa.string()
    schema = source.schema.set(source.schema.get_field_index("ID"), pa.field("ID", id_type))
    output.parent.mkdir(parents=True, exist_ok=True)
    # no quotes: no shipped value holds a comma or a quote (pyarrow raises if one does)
    writer = pq.ParquetWriter(output, schema) if parquet else pacsv.CSVWriter(
        output, schema, write_options=pacsv.WriteOptions(quoting_style="none"))
    with writer:
        for start in range(0, rows, block_rows):
            n = min(block_rows, rows - start)
            block = source.take(rng.integers(0, source.num_rows, n))
            ids = pa.array(np.arange(FIRST_ID + start, FIRST_ID + start + n, dtype="int64"))
            block = block.set_column(block.schema.get_field_index("ID"), "ID", ids.cast(id_type))
            writer.write_table(block)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, required=True, help="number of customers")
    parser.add_argument("--output", type=Path, required=True, help=".csv or .parquet file (not in data/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", action="store_true", help="Train.csv rows with their known segment")
    args = parser.parse_args()
    if (REPO / "data") in args.output.resolve().parents:
        parser.error("write big tables outside the repository's data/ folder")
    print(generate(args.rows, args.output, seed=args.seed, train=args.train))


if __name__ == "__main__":
    main()
