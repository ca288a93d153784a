"""The `deepstdp` command line: train, download (and the commands built on them)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any

from deepstdp import __version__
from deepstdp.config import CLUSTERERS, DATASETS, TrainConfig
from deepstdp.util import DeepSTDPError


def parse_stdp_option(text: str) -> tuple[str, Any]:
    """'key=value' with a JSON value ('nu_post=0.01', 'on_off=true'); strings may be bare."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise DeepSTDPError(f"bad --stdp option {text!r}: use KEY=VALUE")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, help="default: digits (ships with scikit-learn)")
    g.add_argument("--data-root", help="Tiny ImageNet folder (or its parent); else $DEEPSTDP_DATA")
    g.add_argument("--classes", help="class count N (first N wnids, sorted) or wnid,wnid,...")
    g.add_argument("--image-size", type=int, help="resize side (default 64 tiny, 32 digits)")


def add_train_args(p: argparse.ArgumentParser) -> None:
    add_data_args(p)
    g = p.add_argument_group("network")
    g.add_argument("--widths", help="conv widths and M for pooling, e.g. 32,M,64,M,128,M,256,M")
    g.add_argument("--feat-dim", type=int, help="feature layer width (default 512)")
    g.add_argument("--sobel", action=argparse.BooleanOptionalAction, default=None,
                   help="grayscale+Sobel input filter (default on)")
    g.add_argument("--pool", choices=("max", "avg"), help="pooling (default max)")
    g.add_argument("--precision", choices=("auto", "bf16", "fp32"),
                   help="default auto: bf16 where the CPU has native bf16, else fp32")
    g = p.add_argument_group("clustering")
    g.add_argument("--clusterer", choices=CLUSTERERS, help="default kmeans")
    g.add_argument("--k", type=int, help="number of clusters (default: number of classes)")
    g.add_argument("--pca-dim", type=int, help="PCA-whitening dimension (default 256)")
    g.add_argument("--stdp", action="append", metavar="KEY=VALUE", default=None,
                   help="STDPClustering keyword, repeatable (e.g. --stdp time=100)")
    g.add_argument("--stdp-carry", choices=("continue", "fresh"),
                   help="spiking layer across epochs (default continue)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="default 10")
    g.add_argument("--batch-size", type=int, help="default 64")
    g.add_argument("--lr", type=float, help="default 0.05")
    g.add_argument("--momentum", type=float, help="default 0.9")
    g.add_argument("--weight-decay", type=float, help="default 1e-5")
    g.add_argument("--seed", type=int, help="default 0")
    g.add_argument("--threads", type=int, help="default: all cores")
    g.add_argument("--config", help="JSON file of settings; command-line options override it")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then --config, then the options given on the command line."""
    cfg = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    if "stdp" in given:
        given["stdp"] = {**cfg.stdp, **dict(parse_stdp_option(s) for s in given["stdp"])}
    if "classes" in given:
        given["classes"] = str(given["classes"])
    return dataclasses.replace(cfg, **given).validate()


def cmd_train(args: argparse.Namespace) -> int:
    from deepstdp.training import train

    cfg = config_from_args(args)
    out = args.out or f"runs/{cfg.dataset}-{cfg.clusterer}-seed{cfg.seed}"
    rows = train(cfg, out, resume=args.resume, force=args.force, quiet=args.quiet)
    if not args.quiet:
        last = rows[-1]
        print(f"done: {out}  ACC {last['acc']:.3f}  val ACC {last['val_acc']:.3f}")
    return 0


def parse_list(text: str, kind: type, what: str) -> list:
    try:
        items = [kind(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError:
        raise DeepSTDPError(f"bad {what} list {text!r}") from None
    if not items or len(set(items)) != len(items):
        raise DeepSTDPError(f"{what} list {text!r} must be non-empty without repeats")
    return items


def cmd_compare(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from deepstdp.compare import run_all, write_report

    cfg = config_from_args(args)
    clusterers = parse_list(args.clusterers, str, "--clusterers")
    for c in clusterers:
        dataclasses.replace(cfg, clusterer=c).validate()
    seeds = parse_list(args.seeds, int, "--seeds")
    if args.jobs < 1:
        raise DeepSTDPError(f"--jobs must be at least 1, got {args.jobs}")
    out = Path(args.out)
    t0 = time.perf_counter()
    if not args.report_only:
        run_all(cfg, clusterers, seeds, out, jobs=args.jobs, resume=args.resume,
                force=args.force)
    command = "deepstdp " + " ".join(sys.argv[1:]) if args.command_line is None \
        else args.command_line
    summary = write_report(out, clusterers, seeds, command, time.perf_counter() - t0)
    for c in clusterers:
        s = summary[c]
        print(f"{c:>7}: final ACC {s['final_acc']['mean']:.3f} ± {s['final_acc']['std']:.3f}"
              f"  val ACC {s['final_val_acc']['mean']:.3f} ± {s['final_val_acc']['std']:.3f}")
    if "relative_acc_gain_pct" in summary:
        print(f"relative ACC gain {summary['relative_acc_gain_pct']:+.1f}%, iso-accuracy "
              f"speed-up {summary['iso_accuracy_speedup_epochs']} (epochs)")
    print(f"report: {out / 'report.md'}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from deepstdp.data import download_tiny_imagenet

    path = download_tiny_imagenet(args.data_root, progress=not args.quiet)
    print(f"Tiny ImageNet is at {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepstdp",
        description="Deep unsupervised learning with STDP (Deep-STDP) and its k-means baseline.")
    p.add_argument("--version", action="version", version=f"deepstdp {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="run the deep clustering loop")
    add_train_args(t)
    t.add_argument("--out", help="run directory (default runs/DATASET-CLUSTERER-seedS)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--force", action="store_true", help="replace a run already in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("compare", help="k-means against STDP pseudo-labels over seeds")
    add_train_args(c)
    c.add_argument("--clusterers", default="kmeans,stdp", help="default kmeans,stdp")
    c.add_argument("--seeds", default="0,1,2", help="default 0,1,2")
    c.add_argument("--jobs", type=int, default=1, help="runs side by side (default 1)")
    c.add_argument("--out", required=True, help="comparison directory")
    c.add_argument("--resume", action="store_true", help="continue a stopped comparison")
    c.add_argument("--force", action="store_true", help="replace a comparison in --out")
    c.add_argument("--report-only", action="store_true", help="only rewrite the report")
    c.add_argument("--command-line", help=argparse.SUPPRESS)
    c.set_defaults(func=cmd_compare)

    d = sub.add_parser("download", help="fetch and unpack the official Tiny ImageNet zip")
    d.add_argument("--data-root", required=True, help="folder to unpack into")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_download)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DeepSTDPError as e:
        print(f"deepstdp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepstdp: interrupted; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
