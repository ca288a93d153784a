"""The `deepstdp` command line: train, download (and the commands built on them)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import sys
import typing
from collections.abc import Sequence
from typing import Any

from deepstdp import __version__, registry
from deepstdp.config import (
    ACTIVATIONS,
    BALANCES,
    CARRIES,
    DATASETS,
    HEADS,
    KMEANS_BACKENDS,
    POOLS,
    PRECISIONS,
    RECIPES,
    SAMPLINGS,
    SCHEDULES,
    TrainConfig,
    stdp_settings,
)
from deepstdp.conversion.settings import (
    AGREEMENT,
    BINARY_POOLINGS,
    CODINGS,
    EVALUATE_TIMESTEPS,
    NIR_FORMATS,
    READOUTS,
    RESETS,
    SUMMARY_TIMESTEPS,
    ConversionSettings,
    SpikingCheck,
)
from deepstdp.run.rundir import (
    CHECKPOINT,
    COMPARISON,
    SPIKING_NET,
    SPIKING_PLOT,
    SPIKING_ROWS,
    SPIKING_TABLE,
    RunDir,
    check_output_file,
)
from deepstdp.runtime.util import DeepSTDPError, SettingError

TRAIN_DEFAULTS, CONVERSION_DEFAULTS = TrainConfig(), ConversionSettings()
"""Where every default in a help text comes from: the library's, never restated here."""


def shown(value: Any) -> str:
    """A default as a help text shows it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def default(setting: str, defaults: Any = TRAIN_DEFAULTS) -> str:
    """'(default X)', X the library's default of `setting` (TrainConfig's unless told)."""
    return f"(default {shown(getattr(defaults, setting))})"


def parse_stdp_option(text: str) -> tuple[str, Any]:
    """'key=value' with a JSON value ('nu_post=0.01', 'on_off=true'); strings may be bare."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise DeepSTDPError(f"bad --stdp option {text!r}: use KEY=VALUE")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def add_data_args(p: argparse.ArgumentParser, resize: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS,
                   help="digits ships with scikit-learn; folder: any folder of images; the "
                        f"others read their official files (docs/data.md) {default('dataset')}")
    g.add_argument("--data-root", help="the set's folder (or its parent, but for folder); else "
                                       "$DEEPSTDP_DATA")
    g.add_argument("--classes", help="class count N (first N wnids, sorted) or wnid,wnid,... "
                                     f"{default('classes')}")
    if resize:
        g.add_argument("--image-size", type=int, help=f"resize side {default('image_size')}")
    g.add_argument("--val-fraction", type=float,
                   help="folder without train/ and val/: fraction held out as val "
                        f"{default('val_fraction')}")
    g.add_argument("--skip-bad", action=argparse.BooleanOptionalAction, default=None,
                   help=f"folder: skip files that are not images {default('skip_bad')}")


def add_train_args(p: argparse.ArgumentParser, command: str) -> None:
    """The settings of TrainConfig that `command` uses; any other is an error, not ignored."""
    loop = command != "cluster"  # `cluster` fits one clusterer to the pixels: no network
    if loop:
        p.add_argument("--recipe", choices=tuple(RECIPES),
                       help="the set of settings to start from; options given override it: "
                            "v2 (the defaults), deepcluster (Caron et al. 2018), paper "
                            "(deepcluster at 64 px) (docs/reproduction.md) "
                            f"{default('recipe')}")
    add_data_args(p, resize=loop)
    if loop:
        add_network_args(p)
    g = p.add_argument_group("clustering")
    if command != "compare":  # compare takes --clusterers
        g.add_argument("--clusterer", choices=registry.names(), help=default("clusterer"))
    g.add_argument("--kmeans-backend", choices=KMEANS_BACKENDS,
                   help="k-means implementation; auto: faiss where installed and measured "
                        f"faster (large problems), else sklearn {default('kmeans_backend')}")
    g.add_argument("--kmeans-warm", action=argparse.BooleanOptionalAction, default=None,
                   help="k-means starts from last epoch's clusters, one run, instead of 5 "
                        f"k-means++ starts {default('kmeans_warm')}")
    g.add_argument("--k", type=int, help="clusters evaluated (unless given: the number of "
                                         "classes)")
    g.add_argument("--pca-dim", type=int, help=f"PCA-whitening dimension {default('pca_dim')}")
    g.add_argument("--stdp", action="append", metavar="KEY=VALUE", default=None,
                   help="a spiking-layer setting (deepstdp.clustering.stdp.settings, docs/snn.md), "
                        "repeatable, e.g. --stdp time=100; the settings (defaults): "
                        + ", ".join(f"{f.name} ({shown(getattr(TRAIN_DEFAULTS.stdp, f.name))})"
                                    for f in dataclasses.fields(TRAIN_DEFAULTS.stdp)))
    if loop:
        add_loop_args(p, g)
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, help=default("seed"))
    g.add_argument("--threads", type=int,
                   help="unless given: all cores; results are reproducible for a fixed seed and "
                        "thread count")
    if loop:
        g.add_argument("--device", help=f"{DEVICE_HELP} {default('device')}")
    g.add_argument("--config", help="JSON file of settings; command-line options override it")


DEVICE_HELP = ("where the network runs: auto (a CUDA GPU if present, else the CPU), cpu, cuda, "
               "cuda:N or mps")


def add_network_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network")
    g.add_argument("--widths", help=f"conv widths and M for pooling {default('widths')}")
    g.add_argument("--feat-dim", type=int, help=f"feature layer width {default('feat_dim')}")
    g.add_argument("--sobel", action=argparse.BooleanOptionalAction, default=None,
                   help=f"grayscale+Sobel input filter {default('sobel')}")
    g.add_argument("--pool", choices=POOLS,
                   help="avg converts exactly to spiking neurons, max through a gate "
                        f"{default('pool')}")
    g.add_argument("--pool-first", action=argparse.BooleanOptionalAction, default=None,
                   help="average-pool each block before its ReLU, so the spiking network needs "
                        f"no pooling neurons {default('pool_first')}")
    g.add_argument("--activation", choices=ACTIVATIONS,
                   help="qcfs: quantised, converts to spiking neurons in few steps "
                        f"(docs/conversion.md) {default('activation')}")
    g.add_argument("--qcfs-levels", type=int,
                   help=f"quantisation levels of qcfs {default('qcfs_levels')}")
    g.add_argument("--sparsity", type=float,
                   help="weight of the firing penalty: the spiking network's estimated "
                        f"synaptic operations per step / MACs; 0: none {default('sparsity')}")
    g.add_argument("--proj-dim", type=int,
                   help="L2-normalised projection that is clustered; 0: the features "
                        f"{default('proj_dim')}")
    g.add_argument("--dropout", type=float,
                   help=f"before the feature layer {default('dropout')}")
    g.add_argument("--precision", choices=PRECISIONS,
                   help="auto: on a CUDA GPU bf16 where supported, else fp16; on the CPU bf16 "
                        "where the CPU has native bf16 and it measures faster; fp16 needs a GPU "
                        f"{default('precision')}")


def add_loop_args(p: argparse.ArgumentParser, g: Any) -> None:
    """Settings of the training loop: the clustering group's rest, targets, augmentation and
    optimisation."""
    g.add_argument("--k-train", type=int,
                   help="clusters that make the training targets (unless given: 10 * k)")
    g.add_argument("--align-pca", action=argparse.BooleanOptionalAction, default=None,
                   help=f"rotate each epoch's PCA basis onto the last one's {default('align_pca')}")
    g.add_argument("--stdp-carry", choices=CARRIES,
                   help=f"spiking layer across epochs {default('stdp_carry')}")
    g = p.add_argument_group("targets and top layer (docs/learning.md)")
    g.add_argument("--head", choices=HEADS,
                   help="centroid: fixed cluster centroids (DeepCluster-v2); reset: a new linear "
                        f"layer each epoch (DeepCluster) {default('head')}")
    g.add_argument("--temperature", type=float, help=f"centroid head {default('temperature')}")
    g.add_argument("--sampling", choices=SAMPLINGS,
                   help=f"uniform over clusters, or shuffle {default('sampling')}")
    g.add_argument("--balance", choices=BALANCES,
                   help=f"sinkhorn: equal-size targets (SeLa) {default('balance')}")
    g.add_argument("--target-keep", type=float,
                   help="fraction of each target cluster, the surest, trained on "
                        f"{default('target_keep')}")
    g = p.add_argument_group("augmentation")
    g.add_argument("--views", type=int,
                   help=f"augmented views per image and step {default('views')}")
    g.add_argument("--crop-scale", type=float,
                   help=f"smallest crop area fraction {default('crop_scale')}")
    g.add_argument("--jitter", type=float,
                   help=f"colour jitter strength, RGB {default('jitter')}")
    g.add_argument("--grayscale", type=float,
                   help=f"probability of a grayscale view, RGB {default('grayscale')}")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help=default("epochs"))
    g.add_argument("--batch-size", type=int, help=default("batch_size"))
    g.add_argument("--lr", type=float, help=f"peak learning rate {default('lr')}")
    g.add_argument("--schedule", choices=SCHEDULES,
                   help=f"cosine (after warm-up) or constant {default('schedule')}")
    g.add_argument("--warmup-epochs", type=int, help=default("warmup_epochs"))
    g.add_argument("--momentum", type=float, help=default("momentum"))
    g.add_argument("--weight-decay", type=float, help=default("weight_decay"))
    g.add_argument("--knn-k", type=int,
                   help=f"neighbours of the k-NN diagnostic {default('knn_k')}")
    g.add_argument("--probe-every", type=int, metavar="N",
                   help="the k-NN and linear probe every N epochs (and at the first and last) "
                        f"{default('probe_every')}")


def given(args: argparse.Namespace, settings: type) -> dict[str, Any]:
    """The fields of the dataclass `settings` given on the command line (None: not given)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(settings)
            if getattr(args, f.name, None) is not None}


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """The recipe's settings (or `base`), then --config, then the options given on the command
    line; --recipe names the recipe under the config file's values."""
    options = given(args, TrainConfig)
    recipe = options.pop("recipe", None)
    if args.config:
        cfg = TrainConfig.from_file(args.config, recipe=recipe)
    elif base is not None:
        cfg = base if recipe is None else dataclasses.replace(base, recipe=recipe)
    else:
        cfg = TrainConfig.of_recipe(recipe or TRAIN_DEFAULTS.recipe)
    if "stdp" in options:
        options["stdp"] = stdp_settings(dict(parse_stdp_option(s) for s in options["stdp"]),
                                        cfg.stdp)
    if "classes" in options:
        options["classes"] = str(options["classes"])
    return registry.check_settings(dataclasses.replace(cfg, **options))


def cmd_train(args: argparse.Namespace) -> int:
    from deepstdp.loop.training import train

    if args.resume and args.out and RunDir(args.out).holds_run():
        # A resumed run starts from its own settings; options given now override them.
        cfg = config_from_args(args, RunDir(args.out).saved_config())
    else:
        cfg = config_from_args(args)
    out = args.out = args.out or f"runs/{cfg.dataset}-{cfg.clusterer}-seed{cfg.seed}"
    rows = train(cfg, out, resume=args.resume, force=args.force, quiet=args.quiet,
                 tensorboard=args.tensorboard)
    if not args.quiet:
        last = rows[-1]
        scores = "no labels to score" if last["acc"] is None else \
            f"ACC {last['acc']:.3f}  val ACC {last['val_acc']:.3f}"
        print(f"done: {out}  {scores}")
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
    from pathlib import Path

    from deepstdp.conversion.settings import parse_timesteps
    from deepstdp.loop.compare import read_spec, run_all, write_report
    from deepstdp.measures.report import READOUT_TITLES
    from deepstdp.run.rundir import REPORT

    cfg = config_from_args(args)
    clusterers = parse_list(args.clusterers, str, "--clusterers")
    seeds = parse_list(args.seeds, int, "--seeds")
    out = Path(args.out)
    if args.report_only:
        read_spec(out)
    spiking = None
    if args.spiking:  # checked before any run starts
        if args.spiking_limit < 1:
            raise DeepSTDPError(f"--spiking-limit must be at least 1 image, got "
                                f"{args.spiking_limit}")
        steps = args.spiking_timesteps
        spiking = SpikingCheck(tuple(parse_timesteps(steps)) if steps else None,
                               args.spiking_limit, coding=args.spiking_coding,
                               threads=cfg.threads)
        spiking.validate()
    if not args.report_only:
        run_all(cfg, clusterers, seeds, out, jobs=args.jobs, resume=args.resume,
                force=args.force, quiet=args.quiet)
    command = shlex.join(["deepstdp", *sys.argv[1:]]) if args.command_line is None \
        else args.command_line
    summary = write_report(out, clusterers, seeds, command, spiking, progress=not args.quiet)
    for c in clusterers:
        s = summary[c]
        print(f"{c:>7}: final ACC {s['final_acc']['mean']:.3f} ± {s['final_acc']['std']:.3f}"
              f"  last {summary['last_epochs']} epochs {s['last_acc']['mean']:.3f}"
              f"  val ACC {s['final_val_acc']['mean']:.3f} ± {s['final_val_acc']['std']:.3f}"
              f"  | majority vote {s['final_mv_acc']['mean']:.3f} ± "
              f"{s['final_mv_acc']['std']:.3f}  val {s['final_val_mv_acc']['mean']:.3f}")
        if "spiking" in summary:
            sp = summary["spiking"][c]
            print(f"{'':>7}  spiking: T {sp['timesteps']['mean']:.1f}, agreement "
                  f"{sp['agreement']['mean']:.3f}, SOPs/MACs {sp['sops_per_mac']['mean']:.2f}, "
                  f"{sp['energy_snn_uj']['mean']:.1f} uJ against "
                  f"{sp['energy_ann_uj']['mean']:.1f} ({sp['reached']}/{len(seeds)} runs reach "
                  f"{summary['spiking']['target_agreement']})")
    for key, r in summary.get("readouts", {}).items():
        iso = r["iso_accuracy_speedup_epochs"]
        print(f"{READOUT_TITLES[key]}: relative gain {r['relative_gain_pct_final']:+.1f}% "
              f"final, {r['relative_gain_pct_last']:+.1f}% last epochs; iso-accuracy speed-up "
              f"{'not reached' if iso is None else f'{iso:.2f}x'} (epochs)")
    print(f"report: {out / REPORT}")
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    """Cluster raw pixels (or their PCA) with one clusterer: Diehl & Cook's own experiment."""
    from deepstdp.loop.direct import cluster_images

    result = cluster_images(config_from_args(args), args.out, pixels=args.pixels,
                            force=args.force, progress=not args.quiet)
    for split in ("train", "val"):
        m = result[split]
        print(f"{split:>5}: ACC {m['acc']:.3f}  NMI {m['nmi']:.3f}  ARI {m['ari']:.3f}")
    print(f"wrote {args.out}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from deepstdp.data.datasets import download

    path = download(args.name, args.data_root, progress=not args.quiet)
    print(f"{args.name} is at {path}")
    return 0


# --- spiking conversion: convert, evaluate, export (docs/conversion.md) ---------------------


def conversion_from_args(args: argparse.Namespace) -> ConversionSettings:
    """The defaults, then the options given on the command line."""
    return dataclasses.replace(ConversionSettings(), **given(args, ConversionSettings))


def cmd_convert(args: argparse.Namespace) -> int:
    from deepstdp.conversion.converter import convert_run
    from deepstdp.runtime import threads

    with threads.pinned(args.threads):
        snn = convert_run(args.run_dir, conversion_from_args(args), progress=not args.quiet)
    if not args.quiet:
        ifs = [op for op, _ in snn.stages if op.kind == "if"]
        ths = ", ".join(f"{op.threshold:.3g}" for op in ifs)
        print(f"wrote {args.run_dir}/{SPIKING_NET}: {len(ifs)} IF layers, "
              f"{snn.n_neurons()} neurons, thresholds {ths}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from deepstdp.conversion.evaluation import evaluate_run, format_rows
    from deepstdp.conversion.settings import parse_timesteps

    steps = None
    if args.spiking:
        steps = (parse_timesteps(args.timesteps) if args.timesteps
                 else list(EVALUATE_TIMESTEPS[args.coding]))
    res = evaluate_run(args.run_dir, steps, limit=args.limit, batch=args.batch,
                       threads=args.threads, progress=not args.quiet, readout=args.readout,
                       device=args.device, coding=args.coding)
    print(format_rows(res["ann"], res["rows"]))
    if res.get("note"):
        print(f"note: {res['note']}", file=sys.stderr)
    if steps:
        print(f"wrote {args.run_dir}/{SPIKING_ROWS}, {SPIKING_TABLE} and {SPIKING_PLOT}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from deepstdp.run.predict import predict_to_csv

    n = predict_to_csv(args.run_dir, args.inputs, args.out, batch=args.batch,
                       threads_n=args.threads, force=args.force, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {args.out}: {n} images")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from deepstdp.run.html import write_report

    path = write_report(args.path, samples=args.samples, progress=not args.quiet)
    print(f"wrote {path}: open it in any browser, offline (file://{Path(path).resolve()})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from deepstdp.conversion.nir_export import export_run
    from deepstdp.runtime import threads

    check_output_file(args.nir, args.force)
    with threads.pinned(args.threads):
        graph = export_run(args.run_dir, args.nir, args.format, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {args.nir}: {len(graph.nodes)} NIR nodes, {args.format} format of the "
              "synchronous rate code (NIR has no node for the binary code's schedule)")
    if graph.metadata.get("differences"):
        print(f"note: the file differs from the network: {graph.metadata['differences']}",
              file=sys.stderr)
    return 0


def add_conversion_parsers(sub: Any) -> None:
    c = sub.add_parser("convert", help="convert a run's CNN to integrate-and-fire neurons")
    c.add_argument("run_dir", help=f"run directory with {CHECKPOINT}; writes {SPIKING_NET} there")

    def conversion_default(setting: str) -> str:
        return default(setting, CONVERSION_DEFAULTS)

    c.add_argument("--percentile", type=float,
                   help="threshold of a ReLU layer = this percentile of its positive "
                        "activations; QCFS layers keep their trained one "
                        f"{conversion_default('percentile')}")
    c.add_argument("--reset", choices=RESETS,
                   help=f"membrane reset after a spike {conversion_default('reset')}")
    c.add_argument("--v-init", type=float,
                   help="initial membrane potential, fraction of the threshold "
                        f"{conversion_default('v_init')}")
    c.add_argument("--pool-neurons", action=argparse.BooleanOptionalAction, default=None,
                   help="IF neurons after each pooling, so that the next layer's fan-out is "
                        f"paid once per pooled cell {conversion_default('pool_neurons')}")
    c.add_argument("--binary-pooling", choices=BINARY_POOLINGS,
                   help="in the binary code a pooling neuron rounds the pooled mean to its "
                        "layer's levels, or passes it on exactly in 2 more steps "
                        f"{conversion_default('binary_pooling')}")
    c.add_argument("--calib-images", type=int,
                   help="training images the thresholds are measured on "
                        f"{conversion_default('calib_images')}")
    c.add_argument("--calibrate", type=int, dest="calibrate_steps", metavar="T",
                   help="bias calibration for T steps on the same images (Li et al. 2021); "
                        f"0: none {conversion_default('calibrate_steps')}")
    c.add_argument("--readout", choices=READOUTS, dest="calibrate_readout",
                   help="the readout the calibration matches "
                        f"{conversion_default('calibrate_readout')}")
    c.add_argument("--coding", choices=CODINGS, dest="calibrate_coding",
                   help="the coding the calibration simulates (evaluate's --coding) "
                        f"{conversion_default('calibrate_coding')}")
    c.add_argument("--threads", type=int, help="unless given: all cores")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_convert)

    e = sub.add_parser("evaluate", help="metrics of a run, and of its spiking version")
    e.add_argument("run_dir", help=f"run directory with {CHECKPOINT}")
    e.add_argument("--spiking", action="store_true",
                   help="also simulate the converted network (converting it if needed) and "
                        f"write {SPIKING_ROWS}, {SPIKING_TABLE} and {SPIKING_PLOT}")
    e.add_argument("--coding", choices=CODINGS, default=CODINGS[0],
                   help="binary: layer by layer, a spike at step j of a layer's T weighing "
                        "2^(T-1-j); layered: layer by layer, rate code; synchronous: all "
                        "layers step together, rate code (docs/conversion.md) "
                        "(default %(default)s)")
    e.add_argument("--timesteps",
                   help="simulation lengths T (per layer, layer by layer) (default: "
                        + "; ".join(f"{c} {','.join(map(str, t))}"
                                    for c, t in EVALUATE_TIMESTEPS.items())
                        + ")")
    e.add_argument("--readout", choices=READOUTS, default=READOUTS[0],
                   help="features from the feature layer's spike counts or from the input it "
                        "integrated (docs/conversion.md) (default %(default)s)")
    e.add_argument("--limit", type=int, help="images per split, spread evenly (unless given: "
                                             "all)")
    e.add_argument("--batch", type=int, default=256,
                   help="images simulated at once (default %(default)s)")
    e.add_argument("--threads", type=int, help="unless given: all cores")
    e.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default %(default)s)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("export", help="write the converted network to a NIR file")
    x.add_argument("run_dir", help=f"run directory with {CHECKPOINT}")
    x.add_argument("--nir", required=True, metavar="FILE", help="NIR (HDF5) file to write")
    x.add_argument("--format", choices=NIR_FORMATS, default=NIR_FORMATS[0],
                   help="exact: spike for spike, runs in nirtorch with "
                        "deepstdp.conversion.nir_import.nirtorch_node_map(); portable: nodes "
                        "that snnTorch and Norse import, with membranes starting at 0 and, in "
                        "snnTorch, reset to zero; sinabs: nodes that sinabs.from_nir imports, "
                        "spike for spike in deepstdp.conversion.nir_import.sinabs_from_nir() "
                        "(docs/nir.md) (default %(default)s)")
    x.add_argument("--threads", type=int, help="unless given: all cores")
    x.add_argument("--force", action="store_true", help="replace an existing --nir file")
    x.add_argument("--quiet", action="store_true")
    x.set_defaults(func=cmd_export)


# --- end of spiking conversion ------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="deepstdp",
        description="Deep unsupervised learning with STDP (Deep-STDP) and its k-means baseline.")
    p.add_argument("--version", action="version", version=f"deepstdp {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="run the deep clustering loop")
    add_train_args(t, "train")
    t.add_argument("--out", help="run directory (default runs/DATASET-CLUSTERER-seedS)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--force", action="store_true", help="replace a run already in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    t.add_argument("--tensorboard", action="store_true",
                   help="also log metrics and pictures to OUT/tensorboard "
                        "(pip install 'deepstdp[tensorboard]')")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("compare", help="k-means against STDP pseudo-labels over seeds")
    add_train_args(c, "compare")
    c.add_argument("--clusterers", default="kmeans,stdp", help="(default %(default)s)")
    c.add_argument("--seeds", default="0,1,2", help="(default %(default)s)")
    c.add_argument("--jobs", type=int, default=1, help="runs side by side (default %(default)s)")
    c.add_argument("--out", required=True, help="comparison directory")
    c.add_argument("--resume", action="store_true", help="continue a stopped comparison")
    c.add_argument("--force", action="store_true", help="replace a comparison in --out")
    c.add_argument("--report-only", action="store_true", help="only rewrite the report")
    c.add_argument("--spiking", action=argparse.BooleanOptionalAction, default=True,
                   help="convert each final CNN to spiking neurons and report its smallest T "
                        f"with agreement >= {AGREEMENT}, SOPs and energy (default on)")
    c.add_argument("--spiking-coding", choices=CODINGS, default=SpikingCheck.coding,
                   help="how its spikes code and travel, as evaluate's --coding "
                        "(default %(default)s)")
    c.add_argument("--spiking-timesteps",
                   help="steps simulated for it (default: " + "; ".join(
                       f"{c} {','.join(map(str, t))}" for c, t in SUMMARY_TIMESTEPS.items())
                   + ")")
    c.add_argument("--spiking-limit", type=int, default=SpikingCheck.limit,
                   help="images per split it simulates (default %(default)s)")
    c.add_argument("--quiet", action="store_true",
                   help="no progress bars or epoch lines (always so with --jobs > 1)")
    c.add_argument("--command-line", help=argparse.SUPPRESS)
    c.set_defaults(func=cmd_compare)

    k = sub.add_parser("cluster", help="cluster raw pixels or their PCA, no network "
                                       "(the classic Diehl & Cook experiment)")
    add_train_args(k, "cluster")
    k.add_argument("--pixels", action="store_true",
                   help="cluster the pixels themselves (0..1) instead of their PCA-whitening")
    k.add_argument("--out", required=True, help="folder for cluster.json and pictures")
    k.add_argument("--force", action="store_true", help="replace a clustering in --out")
    k.add_argument("--quiet", action="store_true")
    k.set_defaults(func=cmd_cluster)

    d = sub.add_parser("download", help="fetch, check and unpack a data set's official files")
    d.add_argument("name", nargs="?", default="tiny-imagenet", metavar="NAME",
                   help="tiny-imagenet, cifar10, cifar100, stl10, mnist or fashion-mnist "
                        "(cifar100-20 and stl10-unlabelled: their base set's files); an "
                        "interrupted download continues where it stopped (default %(default)s)")
    d.add_argument("--data-root", required=True, help="folder to unpack into")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_download)

    r = sub.add_parser("predict", help="assign new images to a trained run's clusters (CSV)")
    r.add_argument("run_dir", help=f"run directory with {CHECKPOINT}")
    r.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, or folders of them (read at any depth)")
    r.add_argument("--out", required=True, metavar="FILE.csv",
                   help="CSV to write: path, cluster, target_cluster, margin")
    r.add_argument("--batch", type=int, default=256,
                   help="images embedded at once (default %(default)s)")
    r.add_argument("--threads", type=int, help="unless given: all cores")
    r.add_argument("--force", action="store_true", help="replace an existing --out file")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_predict)

    h = sub.add_parser("report", help="one self-contained report.html of a run or comparison")
    h.add_argument("path", help="a run's or a comparison's folder; report.html is written there")
    h.add_argument("--samples", type=int, default=8,
                   help="sample images shown per cluster (default %(default)s)")
    h.add_argument("--quiet", action="store_true", help="no progress bar")
    h.set_defaults(func=cmd_report)
    add_conversion_parsers(sub)  # spiking conversion
    return p


class Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line, like every other error here, and no
    abbreviated options (`--clusterer` must not silently mean `--clusterers`)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


RENAMED = {"calibrate_steps": "--calibrate", "calibrate_readout": "--readout",
           "calibrate_coding": "--coding"}
"""Options named otherwise than their setting (convert's)."""


def option_of(e: SettingError) -> str:
    """The command-line option behind a setting ('batch_size' -> '--batch-size')."""
    if e.setting.startswith("stdp."):
        return f"--stdp {e.setting.removeprefix('stdp.')}"
    return RENAMED.get(e.setting, "--" + e.setting.replace("_", "-"))


def _process() -> str:
    """' (process R of N)' under torchrun, where torchrun stops every process when one fails."""
    from deepstdp.runtime.distributed import rank_and_size

    rank, size = rank_and_size()
    return f" (process {rank} of {size})" if size > 1 else ""


def _resume_hint(args: argparse.Namespace) -> str:
    """'; continue with --resume' where the interrupted command can resume what it left (a
    run with a finished epoch, a comparison begun), else nothing: a start cut short before
    its first checkpoint leaves nothing to resume, and convert and evaluate simply run again."""
    from pathlib import Path

    out = getattr(args, "out", None)
    if args.command not in ("train", "compare") or not out:
        return ""
    if RunDir(out).holds_run() or (Path(out) / COMPARISON).exists():
        return "; continue with --resume"
    return "; nothing was saved"


def _stop(signum: int, frame: Any) -> None:
    """SIGTERM ends a command as Ctrl-C does: workers stopped, no temp files. Neither does
    once a distributed run has begun its end (the barrier, then the process group destroyed):
    its outcome stands, and torchrun's SIGTERM to the last process after another's exit must
    not turn a bad input's exit 2 into an interrupt."""
    distributed = sys.modules.get("deepstdp.runtime.distributed")
    if distributed is not None and distributed.ending():
        return
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not sys.stderr.isatty():  # a log file: epoch lines only, no carriage-return bars
        os.environ.setdefault("TQDM_DISABLE", "1")
    signal.signal(signal.SIGTERM, _stop)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where ignored
        signal.signal(signal.SIGINT, _stop)
    try:
        return args.func(args)
    except SettingError as e:
        _say(f"error: {option_of(e)} {e.problem}")
    except DeepSTDPError as e:
        distributed = sys.modules.get("deepstdp.runtime.distributed")  # loaded if it raised
        resumable = distributed is not None and isinstance(e, distributed.PeerFailed)
        _say(f"error: {e}{': continue with --resume' if resumable else ''}")
    except OSError as e:  # disk full, permissions changed under a running command, ...
        where = f": {e.filename}" if e.filename else ""
        _say(f"error: {e.strerror or e}{where}")
    except KeyboardInterrupt:
        _say(f"interrupted{_process()}{_resume_hint(args)}")
        return 130
    finally:
        distributed = sys.modules.get("deepstdp.runtime.distributed")
        if distributed is not None and distributed.ending():
            # Kept through the interpreter's finalization, which resets Python's own handlers
            # to the default (a SIGTERM there would end the process with -15, not its code).
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 2


def _say(message: str) -> None:
    """One line on stderr in one write, so that the lines of torchrun's processes, which share
    the stream, do not interleave (print writes the newline apart)."""
    sys.stderr.write(f"deepstdp: {message}\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
