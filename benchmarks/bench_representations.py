"""How good and how stable are the mixed-type, guided and consensus representations? (shipped data, k = 7)

For one configuration of :class:`~custseg.embedders.mixed.MixedAutoencoderEmbedder` +
:class:`~custseg.clustering.ConsensusKMeans`, and each of ``--seeds`` seeds:

* in-sample: fit on every training row (with their segments when guided), then NMI, ARI and
  mapped accuracy of the consensus clusters against the known segments;
* held-out (``--folds``, 5 by default; only with ``--held-out``): fit on four folds (with
  their segments when guided), map clusters to segments on those rows, predict the fifth
  fold's clusters and score them against its segments;
* seed-to-seed ARI: between the in-sample clusterings of every pair of seeds;
* fit time: wall clock and CPU time (the CPU time is what the machine's other load does not inflate).

Usage::

    PYTHONPATH=src python benchmarks/bench_representations.py --members 40 --epochs 10 --seeds 3
    PYTHONPATH=src python benchmarks/bench_representations.py --guidance 2 --held-out --json out.json

Prints one line per fit and a summary; ``--json`` also writes the summary.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import StratifiedKFold

from custseg.clustering import ConsensusKMeans, map_clusters_to_segments
from custseg.embedders.mixed import MixedAutoencoderEmbedder
from custseg.evaluation.metrics import external_metrics
from custseg.io.reading import read_table
from custseg.schema import infer_schema

REPO = Path(__file__).resolve().parents[1]


def fit_segmentation(frame, y, schema, args, seed):
    """Embedder + consensus clusterer fitted on ``frame``; returns them and the timings."""
    wall, cpu = time.perf_counter(), time.process_time()
    emb = MixedAutoencoderEmbedder(
        numeric=schema.names("numeric"), categorical=schema.names("categorical"), hidden_dims=tuple(args.hidden),
        latent_dim=args.latent, n_members=args.members, guidance_weight=args.guidance, max_epochs=args.epochs,
        batch_size=args.batch, learning_rate=args.lr, noise=args.noise, categorical_loss=args.loss,
        random_state=seed).fit(frame, y if args.guidance else None)
    t_fit = time.perf_counter() - wall, time.process_time() - cpu
    ck = ConsensusKMeans(n_clusters=args.k, n_members=args.members, consensus=args.consensus,
                         member_n_init=args.member_n_init, n_init=args.consensus_n_init,
                         random_state=seed).fit(emb.transform(frame))
    t_all = time.perf_counter() - wall, time.process_time() - cpu
    return emb, ck, {"fit_wall": t_fit[0], "fit_cpu": t_fit[1], "total_wall": t_all[0], "total_cpu": t_all[1]}


def held_out(frame, y, schema, args, seed) -> dict[str, float]:
    """Mean held-out NMI / ARI / mapped accuracy over the folds."""
    scores = []
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=seed).split(frame, y)
    for train_idx, test_idx in folds:
        train, test = frame.iloc[train_idx], frame.iloc[test_idx]
        emb, ck, _ = fit_segmentation(train, y[train_idx], schema, args, seed)
        mapping = map_clusters_to_segments(ck.labels_, y[train_idx])
        predicted = ck.predict(emb.transform(test))
        mapping = {c: mapping.get(c, "") for c in range(args.k)}
        scores.append(external_metrics(predicted, y[test_idx], mapping))
    return {f"held_out_{m}": float(np.mean([s[m] for s in scores])) for m in scores[0]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", default=str(REPO / "data" / "raw" / "Train.csv"))
    p.add_argument("--k", type=int, default=7)
    p.add_argument("--members", type=int, default=1)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 32])
    p.add_argument("--latent", type=int, default=8)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--noise", type=float, default=0.0)
    p.add_argument("--loss", default="cross_entropy", choices=["cross_entropy", "mse"])
    p.add_argument("--guidance", type=float, default=0.0)
    p.add_argument("--consensus", default="latent", choices=["latent", "membership"])
    p.add_argument("--member-n-init", type=int, default=1)
    p.add_argument("--consensus-n-init", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=42)
    p.add_argument("--held-out", action="store_true", help="also score 5-fold held-out (slow: 5 more fits per seed)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    table = read_table(args.train)
    schema = infer_schema(table.frame)
    frame = table.frame
    y = frame[schema.label_column].astype(str).to_numpy()
    runs, labelings = [], []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        emb, ck, times = fit_segmentation(frame, y, schema, args, seed)
        labels = ck.labels_
        labelings.append(labels)
        run = {"seed": seed, **times, **external_metrics(labels, y, map_clusters_to_segments(labels, y)),
               "agreement": float(ck.agreement_.mean())}
        if args.held_out:
            run.update(held_out(frame, y, schema, args, seed))
        runs.append(run)
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in run.items()), flush=True)
    pairs = [adjusted_rand_score(a, b) for a, b in itertools.combinations(labelings, 2)]
    summary = {"config": vars(args), "runs": runs,
               "mean": {k: float(np.mean([r[k] for r in runs])) for k in runs[0] if k != "seed"},
               "seed_to_seed_ari": float(np.mean(pairs)) if pairs else None,
               "seed_to_seed_ari_min": float(np.min(pairs)) if pairs else None}
    print("mean", " ".join(f"{k}={v:.3f}" for k, v in summary["mean"].items()),
          f"seed_to_seed_ari={summary['seed_to_seed_ari']}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


if __name__ == "__main__":
    main()
