"""Generate a big *training* table from the shipped Train.csv, for the large-table training benchmark.

Rows of ``data/raw/Train.csv`` are sampled with replacement (seeded) and given new,
unique IDs; unlike the scoring tables (``gen_big_table.py``) the known segment is kept,
as in a table to train on. The cells stay the text they are in the shipped file.
Write it outside the repository's ``data/`` folder::

    python benchmarks/gen_big_train_table.py --rows 1000000 --output /tmp/big_train_1m.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

REPO = Path(__file__).resolve().parents[1]
SHIPPED_TRAIN = REPO / "data" / "raw" / "Train.csv"
#: new IDs start above the shipped ones, so they never collide with a shipped customer
FIRST_ID = 10_000_000


def generate(rows: int, output: Path, seed: int = 0) -> Path:
    """Write ``rows`` customers sampled from Train.csv, IDs FIRST_ID, FIRST_ID + 1, ..., to ``output`` (CSV)."""
    head = SHIPPED_TRAIN.open(encoding="utf-8").readline().strip().split(",")
    source = pacsv.read_csv(SHIPPED_TRAIN, convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in head}, strings_can_be_null=True))
    block = source.take(np.random.default_rng(seed).integers(0, source.num_rows, rows))
    ids = pa.array(np.arange(FIRST_ID, FIRST_ID + rows).astype(str))
    block = block.set_column(block.schema.get_field_index("ID"), "ID", ids)
    output.parent.mkdir(parents=True, exist_ok=True)
    # no quotes: no shipped value holds a comma or a quote (pyarrow raises if one does)
    pacsv.write_csv(block, output, write_options=pacsv.WriteOptions(quoting_style="none"))
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, required=True, help="number of customers")
    parser.add_argument("--output", type=Path, required=True, help=".csv file (not in data/)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if (REPO / "data") in args.output.resolve().parents:
        parser.error("write big tables outside the repository's data/ folder")
    print(generate(args.rows, args.output, seed=args.seed))


if __name__ == "__main__":
    main()
