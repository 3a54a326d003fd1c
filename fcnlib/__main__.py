"""The command line: ``python -m fcnlib COMMAND`` (or ``fcnlib COMMAND`` once installed).

Each command is one ``_add_*`` function that registers its subparser and sets ``handle``, the
function that carries it out; add a command by appending its ``_add_*`` to ``COMMANDS``.
Handlers import the modules they use when they run (no import cycle asks for it), so that
``fcnlib --help`` and a refused option answer without loading the training code.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import typing
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from fcnlib.config import RECIPES, TrainConfig, checkpoint_path
from fcnlib.data import DATASETS
from fcnlib.models import BACKBONES


def _download(args: argparse.Namespace) -> None:
    from fcnlib import download

    fetch = {
        "camvid": download.download_camvid,
        "voc": download.download_voc,
        "voc-sample": download.download_voc_sample,
    }[args.dataset]
    folder = fetch(args.root)
    print(f"{args.dataset} is ready and verified in {folder}")


def _add_download(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "download",
        help="download a dataset into the data root and verify it",
        description="Download a dataset, verify it and unpack it where fcnlib.data reads it. "
        "An interrupted download resumes when the command is run again.",
        epilog="examples:\n"
        "  fcnlib download camvid                 # CamVid in SegNet's 11-class split\n"
        "  fcnlib download voc --root /data       # VOC 2012 and SBD, several GB\n"
        "  fcnlib download voc-sample             # the reference's demo image and label",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dataset",
        choices=[*DATASETS, "voc-sample"],
        help="camvid, voc (VOC 2012 + SBD), or voc-sample (one VOC image and its label)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="folder to put it in (default: $FCNLIB_DATA_ROOT, else the repository's data/)",
    )
    parser.set_defaults(handle=_download)


def _size(text: str) -> tuple[int, ...]:
    """``352x480`` (height x width), ``320`` (square) or ``none`` (whole images: ``()``)."""
    if text.lower() == "none":
        return ()
    try:
        parts = [int(part) for part in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write 352x480, 320 or none")
    return (parts[0], parts[-1])


def _fixed_size(text: str) -> tuple[int, int]:
    """A size as ``_size`` reads it, but not ``none``: a benchmark needs a fixed input."""
    size = _size(text)
    if not size:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fixed size: write 360x480 or 500")
    return size


def _positive(kind: type, zero: bool = False) -> Callable[[str], int | float]:
    """A parser of finite numbers of ``kind`` above 0 (or at least 0, with ``zero``)."""
    wanted = f"{'non-negative' if zero else 'positive'} {kind.__name__}"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = -1
        if not (value >= 0 if zero else value > 0) or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a {wanted}")
        return value

    return parse


def _config_options() -> list[tuple[str, dict]]:
    """The options of ``fcnlib train``: (TrainConfig field, argparse keywords) for each field
    with a help text, its parser chosen by the field's type (:func:`fcnlib.config._option`)."""
    kinds = typing.get_type_hints(TrainConfig)
    options = []
    for field in dataclasses.fields(TrainConfig):
        meta = field.metadata
        if "help" not in meta:
            continue
        kind = kinds[field.name]
        keywords: dict = {"help": meta["help"], "dest": field.name, "default": None}
        keywords["flags"] = (meta["flag"] or "--" + field.name.replace("_", "-"),)
        if meta["metavar"]:
            keywords["metavar"] = meta["metavar"]
        if kind is bool:
            keywords["action"] = argparse.BooleanOptionalAction
        elif meta["choices"]:
            keywords["choices"] = meta["choices"]
        elif kind == tuple[int, int] | None:  # a size, written HxW
            keywords["type"] = _size
        elif kind in (int, float, int | None, float | None):
            number = int if kind in (int, int | None) else float
            minimum = meta["minimum"]
            keywords["type"] = number if minimum is None else _positive(number, minimum == 0)
        options.append((field.name, keywords))
    return options


_TRAIN_EPILOG = """\
examples:
  fcnlib train --steps 2000                      # FCN-8s on CamVid, the modern recipe
  fcnlib train --width 0.125 --crop 96x128 --train-limit 32 --steps 50 --device cpu
  fcnlib train --recipe paper --model fcn32s --checkpoint runs/fcn32s.pt
  fcnlib train --recipe paper --model fcn16s --init-from runs/fcn32s.pt \\
      --checkpoint runs/fcn16s.pt                # staged: FCN-16s starts from FCN-32s
  torchrun --nproc-per-node 4 -m fcnlib train --batch-size 64   # four GPUs

The run saves its checkpoint every --checkpoint-interval steps, at the end and when stopped
with Ctrl-C or SIGTERM; the same command run again resumes it exactly. --restart starts over.
Recipes: "modern" trains from scratch on CamVid crops (VGG16-BN, AdamW, poly schedule);
"paper" is the reference implementation on VOC + SBD (ImageNet VGG16, batch 1, momentum 0.99,
summed loss, fixed rate 1e-10/1e-12/1e-14 for 32s/16s/8s) and needs a GPU and the VOC download;
"paper-normalised" is its equivalent with a mean loss, batch 20, momentum 0.9 and rate 1e-4;
"cpu" is the modern recipe sized for two CPU cores (width 1/8, batch 8 of 176x240 crops,
about 70 minutes for the staged FCN-32s, 16s and 8s), the one that trained the nets the book
ships.
"""


def _overrides(args: argparse.Namespace) -> dict:
    """The TrainConfig settings given on the command line (``_config_options``)."""
    overrides = {field: getattr(args, field, None) for field, _ in _config_options()}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides.get("crop_size") == ():
        overrides["crop_size"] = None
    return overrides


def _add_recipe_options(
    parser: argparse.ArgumentParser, skip: tuple[str, ...] = (), default: str = "modern"
) -> None:
    parser.add_argument(
        "--recipe",
        choices=RECIPES,
        default=default,
        help=f"the starting settings (default: {default})",
    )
    for field, keywords in _config_options():
        if field not in skip:
            keywords = dict(keywords)
            parser.add_argument(*keywords.pop("flags"), **keywords)


def _train_config(args: argparse.Namespace):
    from fcnlib.train import recipe

    overrides = _overrides(args)
    model = overrides.pop("model", "fcn8s")
    config = recipe(args.recipe, model, **overrides)
    checkpoint = args.checkpoint or checkpoint_path(
        "runs", config.dataset, config.model, config.backbone
    )
    return replace(config, checkpoint=str(checkpoint), progress=not args.quiet)


def _train(args: argparse.Namespace) -> None:
    from fcnlib.runtime import distributed, process_group
    from fcnlib.train import start_or_resume

    config = _train_config(args)
    path = Path(config.checkpoint)
    if args.restart:
        path.unlink(missing_ok=True)
    with process_group():
        history = start_or_resume(config, args.init_from)
        rank = distributed()[0]
    if rank == 0:
        scores = history.evals[-1]
        print(
            f"step {history.steps[-1]}: loss {history.loss[-1]:.3f}, validation mean IU "
            f"{100 * scores['mean_iu']:.1f} %, pixel accuracy "
            f"{100 * scores['pixel_accuracy']:.1f} %"
        )
        print(f"checkpoint: {path}; per-class scores: fcnlib evaluate {path}")


def _add_train(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train an FCN; resumes an interrupted run",
        description="Train an FCN (fcnlib.train.fit). Start from a recipe and change any of "
        "its settings; every option left out keeps the recipe's value.",
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_recipe_options(parser)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="where to save (and resume) the run (default: runs/DATASET-MODEL.pt)",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        metavar="CHECKPOINT",
        help="staged training: start from the weights of a trained coarser net",
    )
    parser.add_argument("--restart", action="store_true", help="delete the checkpoint first")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handle=_train)


def _reproduce(args: argparse.Namespace) -> None:
    from fcnlib.classes import class_table
    from fcnlib.experiment import format_comparison, reproduce
    from fcnlib.runtime import process_group

    with process_group():
        runs = reproduce(
            args.recipe,
            models=args.models,
            overrides=_overrides(args),
            checkpoint_folder=args.runs,
            results=args.results,
            predictions=args.predictions,
            limit=args.limit,
            progress=not args.quiet,
            command=args.argv,
        )
    if runs:
        dataset = next(iter(runs.values())).record["dataset"]
        print(format_comparison(runs, dataset, class_table(dataset).classes))


_REPRODUCE_EPILOG = """\
examples:
  fcnlib reproduce                               # CamVid from scratch, the modern recipe
  fcnlib reproduce --steps 3000 --models fcn8s-atonce
  fcnlib reproduce --recipe paper                # the paper: VOC + SBD, ImageNet VGG16
  fcnlib reproduce --width 0.0625 --crop 96x128 --train-limit 16 --steps 20 --limit 8 \\
      --device cpu --results /tmp/results        # a minute on a CPU, to see it work

Each net is trained into runs/DATASET-MODEL.pt, FCN-16s from FCN-32s and FCN-8s from FCN-16s;
run the same command again to resume an interrupted experiment (finished nets are not
retrained, only scored again). The results folder receives DATASET-MODEL.json (the four
metrics, the IU of every class, training time, images per second, machine, versions, commit
and this command), DATASET-MODEL-history.csv (the validations against training time) and
DATASET-MODEL/*.png (labels of a few evaluation images). The book's evaluation chapter shows
results/camvid-*.json next to the published numbers.
"""


def _add_folders(parser: argparse.ArgumentParser) -> None:
    """The folders ``fcnlib reproduce`` writes and ``fcnlib weights --ship`` reads."""
    parser.add_argument(
        "--runs", type=Path, default=Path("runs"), help="checkpoints folder (default: runs/)"
    )
    parser.add_argument(
        "--results", type=Path, default=Path("results"), help="results folder (default: results/)"
    )


def _add_reproduce(commands: argparse._SubParsersAction) -> None:
    from fcnlib.experiment import STAGED_FROM

    parser = commands.add_parser(
        "reproduce",
        help="the paper's experiment: FCN-32s, 16s, 8s staged and FCN-8s at once, scored",
        description="Train FCN-32s, then FCN-16s from it and FCN-8s from that (staged, as in "
        "the paper's Section 4.2), and FCN-8s at once; score each on the evaluation split "
        "(CamVid test, VOC seg11valid), record the results and print them next to the "
        "published mean IU. Every recipe option of `fcnlib train` applies to each net.",
        epilog=_REPRODUCE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_recipe_options(parser, skip=("model",))
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(STAGED_FROM),
        default=list(STAGED_FROM),
        metavar="MODEL",
        help=f"any of {', '.join(STAGED_FROM)} (default: all); a staged net needs its coarser "
        "net's checkpoint",
    )
    _add_folders(parser)
    parser.add_argument(
        "--predictions",
        type=_positive(int, zero=True),
        default=3,
        metavar="N",
        help="label PNGs of N evaluation images per net (default 3)",
    )
    parser.add_argument(
        "--limit", type=_positive(int), metavar="N", help="score the first N images only"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handle=_reproduce)


def _sweep(args: argparse.Namespace) -> None:
    from fcnlib.sweep import format_sweep, sweep

    overrides = _overrides(args)
    model = overrides.pop("model", "fcn32s")
    record = sweep(
        args.recipe,
        model=model,
        minutes=args.minutes,
        variants=args.variants,
        overrides=overrides,
        out=args.out,
        checkpoint_folder=args.runs,
        command=args.argv,
    )
    print(format_sweep(record))


_SWEEP_EPILOG = """\
examples:
  fcnlib sweep                                   # FCN-32s, the cpu recipe, 8 minutes a variant
  fcnlib sweep --minutes 4 --variants recipe "no class weights"
  fcnlib sweep --width 0.0625 --crop 96x128 --train-limit 16 --minutes 0.2 \\
      --device cpu --out /tmp/sweep.json         # a minute, to see it work

A variant's steps are the training minutes over its measured seconds a step, and its schedule
(warm-up, then polynomial decay) is spread over them. The record is written after each variant;
run the same command again to resume. The book's training chapter shows results/sweep-cpu.json.
"""


def _add_sweep(commands: argparse._SubParsersAction) -> None:
    from fcnlib.sweep import VARIANTS

    parser = commands.add_parser(
        "sweep",
        help="compare variants of a recipe by validation mean IU per training minute",
        description="Train a net with each variant of a recipe for the same minutes of "
        "training (each variant's steps set by timing a few of them) and record its "
        "validation scores; the test split is not used. Run it again to resume.",
        epilog=_SWEEP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_recipe_options(parser, ("steps", "eval_interval", "checkpoint_interval"), "cpu")
    parser.add_argument(
        "--minutes",
        type=_positive(float),
        default=8.0,
        help="training minutes per variant (default 8)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        metavar="VARIANT",
        help=f"any of: {'; '.join(VARIANTS)} (default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results/sweep-cpu.json"),
        help="the record (default: results/sweep-cpu.json)",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        default=Path("runs/sweep"),
        help="checkpoints folder (default: runs/sweep/)",
    )
    parser.set_defaults(handle=_sweep)


def _device(args: argparse.Namespace):
    """The device ``--device`` names, else fcnlib's default (a GPU if there is one)."""
    from fcnlib.runtime import device

    return device(args.device)


def _evaluate(args: argparse.Namespace) -> None:
    from fcnlib.classes import class_table
    from fcnlib.records import check_writable, write_csv, write_json
    from fcnlib.scoring import format_scores, history_rows, score_checkpoint

    for option, path in (("--out", args.out), ("--history", args.history)):
        if path:
            check_writable(path, option)
    _, metrics, record = score_checkpoint(
        args.checkpoint,
        args.split,
        limit=args.limit,
        device=_device(args),
        progress=not args.quiet,
        command=args.argv,
    )
    model, dataset = record["model"], record["dataset"]
    print(f"{model} on {dataset} {record['split']}, {record['images']} images")
    print(format_scores(metrics, class_table(dataset), model if dataset == "voc" else None))
    if args.out:
        write_json(args.out, record)
        print(f"scores written to {args.out}")
    if args.history:
        from fcnlib import weights

        write_csv(args.history, *history_rows(weights.read(args.checkpoint)["history"]))
        print(f"validation history written to {args.history}")


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="score a trained FCN: the paper's four metrics and the IU of every class",
        description="Score a checkpoint written by `fcnlib train` on a split of its dataset: "
        "pixel accuracy, mean accuracy, mean IU and frequency-weighted IU (the paper's "
        "Section 5), and the IU of every class. On PASCAL VOC the published mean IU of the "
        "same model is printed alongside.",
        epilog="examples:\n"
        "  fcnlib evaluate camvid-lite0-fcn8s                # the shipped FCN-8s\n"
        "  fcnlib evaluate runs/camvid-fcn8s.pt              # CamVid test\n"
        "  fcnlib evaluate runs/camvid-fcn8s.pt --split val --limit 20\n"
        "  fcnlib evaluate runs/voc-fcn8s.pt                 # VOC seg11valid, with the paper's\n"
        "  fcnlib evaluate runs/camvid-fcn8s.pt --out results/camvid-fcn8s.json \\\n"
        "      --history results/camvid-fcn8s-history.csv   # record the run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        help="a checkpoint written by fcnlib train, or a shipped net's name (fcnlib weights)",
    )
    parser.add_argument(
        "--split", help="CamVid train, val or test (default: test); VOC seg11valid (default)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="also write the scores, the training time and the machine to this JSON file",
    )
    parser.add_argument(
        "--history",
        type=Path,
        help="also write the run's validations (step, training seconds, loss, metrics) as CSV",
    )
    parser.add_argument(
        "--limit", type=_positive(int), metavar="N", help="score the first N images only"
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: a GPU if any)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handle=_evaluate)


def _predict(args: argparse.Namespace) -> None:
    from fcnlib import weights
    from fcnlib.checkpoint import load_trained
    from fcnlib.classes import class_table
    from fcnlib.data import read_image
    from fcnlib.predict import predict, prediction_paths, save_prediction
    from fcnlib.records import check_writable

    for path in args.images:
        if path.is_dir():
            raise IsADirectoryError(
                f"image {path} is a folder: give image files, e.g. {path}/*.jpg"
            )
        if not path.is_file():
            raise FileNotFoundError(f"image {path} does not exist")
    outputs = prediction_paths(args.images, args.out, args.overwrite)
    check_writable(outputs[0][0], "--out")
    device = _device(args)
    source = args.checkpoint or weights.DEFAULT
    model, config = load_trained(weights.read(source), device, name=source)
    table = class_table(config.dataset)
    for path, paths in zip(args.images, outputs, strict=True):
        image = read_image(path, remedy="give a JPEG or PNG photo")
        labels = predict(model, image, device)
        written = save_prediction(image, labels, table, paths)
        print(f"{path} -> {written[0]}, {written[1]}")


def _add_predict(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict",
        help="label images with a trained FCN and write coloured label maps and overlays",
        description="Label every pixel of each IMAGE with the FCN-8s that ships with fcnlib, "
        "or a checkpoint written by `fcnlib train`. For photo.jpg it writes OUT/photo.png, the "
        "labels in the dataset's colours (a palette PNG whose pixel values are the class "
        "ids), and OUT/photo_overlay.png, the colours blended over the photo.",
        epilog="examples:\n"
        "  fcnlib predict street.jpg                       # the shipped CamVid FCN-8s\n"
        "  fcnlib predict street.jpg --checkpoint runs/camvid-fcn8s.pt\n"
        "  fcnlib predict frames/*.png --checkpoint runs/camvid-fcn8s.pt --out labelled/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="JPEG or PNG files")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="a checkpoint written by fcnlib train, or a shipped net's name "
        "(default: camvid-lite0-fcn8s, shipped)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("predictions"), help="folder (default: predictions/)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files at the output paths that fcnlib did not write (never an input "
        "image; fcnlib's own earlier outputs are always replaced)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: a GPU if any)")
    parser.set_defaults(handle=_predict)


def _weights(args: argparse.Namespace) -> None:
    from fcnlib import weights
    from fcnlib.experiment import ship

    if args.ship:
        ship(
            args.dataset,
            args.ship,
            backbone=args.backbone,
            checkpoint_folder=args.runs,
            results=args.results,
            command=args.argv,
        )
    print(weights.listing())


def _add_weights(commands: argparse._SubParsersAction) -> None:
    from fcnlib.experiment import STAGED_FROM

    parser = commands.add_parser(
        "weights",
        help="list the trained nets that ship with fcnlib, or ship newly trained ones",
        description="List the trained nets that ship with fcnlib (their names work wherever "
        "a checkpoint does) with their mean IU, measured on the whole evaluation split with "
        "the shipped float16 weights. --ship exports nets trained and recorded by `fcnlib "
        "reproduce` into the package, scored again in float16.",
        epilog="examples:\n"
        "  fcnlib weights\n"
        "  fcnlib weights --ship fcn32s fcn16s fcn8s   # from runs/ and results/\n"
        "  fcnlib weights --ship fcn32s fcn16s fcn8s --backbone lite0 \\\n"
        "      --runs runs/transfer --results results/transfer",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--ship", nargs="+", choices=list(STAGED_FROM), metavar="MODEL", help="models to ship"
    )
    parser.add_argument("--dataset", choices=list(DATASETS), default="camvid")
    parser.add_argument(
        "--backbone", choices=BACKBONES, default="vgg16", help="of the nets to ship (default vgg16)"
    )
    _add_folders(parser)
    parser.set_defaults(handle=_weights)


def _bench(args: argparse.Namespace) -> None:

    from fcnlib import bench
    from fcnlib.book import chapter_notebooks
    from fcnlib.records import check_writable, environment, write_json
    from fcnlib.runtime import REPO_ROOT

    where = _device(args)
    out = args.out or REPO_ROOT / "results" / f"bench-{where.type}.json"
    check_writable(out, "--out")
    gpu = where.type == "cuda"
    sizes = args.sizes or ([(500, 500), (360, 480)] if gpu else [(360, 480)])
    batches = args.batches or ([1, 8] if gpu else [1])
    variants = args.variants or (list(bench.VARIANTS) if gpu else ["fp32", "bf16"])

    def show(result: bench.Result) -> None:
        mfu = "" if result.mfu is None else f", MFU {100 * result.mfu:.1f} %"
        print(
            f"{result.model:>15} {result.height}x{result.width} batch {result.batch:<3} "
            f"{result.variant:<27} {result.task:<5} {result.median_ms:9.2f} ms "
            f"{result.images_per_s:9.2f} img/s {result.flops_per_image / 1e9:8.1f} GFLOP/img "
            f"{result.achieved_tflops:7.2f} TFLOP/s{mfu}",
            flush=True,
        )

    report: dict[str, object] = {"environment": environment(where, args.argv)}
    if not gpu:  # no data sheet: measure the peak in the same run
        report["peak_tflops"] = {p: bench.matmul_peak(where, p) for p in ("fp32", "bf16")}
        print(
            "matrix-multiply peak:",
            ", ".join(f"{k} {v:.3f} TFLOP/s" for k, v in report["peak_tflops"].items()),
        )
    report["results"] = bench.measure_all(
        where,
        sizes=sizes,
        batches=batches,
        variants=variants,
        model_names=args.models,
        width=args.width,
        warmup=args.warmup,
        repeats=args.repeats,
        progress=show,
    )
    if args.notebooks:
        report["notebook_seconds"] = seconds = bench.time_notebooks(chapter_notebooks())
        for name, taken in seconds.items():
            print(f"notebook {name:<18} {taken:6.1f} s in fast mode")
    write_json(out, report)
    print(f"written to {out}")


def _add_bench(commands: argparse._SubParsersAction) -> None:
    from fcnlib.bench import MODELS, VARIANTS

    parser = commands.add_parser(
        "bench",
        help="measure training throughput, inference latency and FLOPs against a peer model",
        description="Time FCN-8s (VGG16 and VGG16-BN) and torchvision's fcn_resnet50 in one "
        "run: a training step (forward, backward, SGD step) and inference, for each size, "
        "batch and variant, after warm-up, with device synchronisation, as the median of "
        "repeated calls. FLOPs are counted with torch.utils.flop_counter; on a GPU whose peak "
        "is tabulated the model FLOPs utilisation (MFU) is reported. Results go to a JSON "
        "file with the hardware and versions.",
        epilog="examples:\n"
        "  fcnlib bench                                   # all defaults for this machine\n"
        "  fcnlib bench --device cuda --sizes 500x500 --batches 1 16\n"
        "  fcnlib bench --device cpu --notebooks          # also time each chapter\n"
        "defaults: on a GPU 500x500 and 360x480, batches 1 and 8, every variant; on a CPU "
        "360x480, batch 1, fp32 and bf16",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: a GPU if any)")
    parser.add_argument(
        "--sizes",
        type=_fixed_size,
        nargs="+",
        metavar="HxW",
        help="input sizes, e.g. 500x500 360x480",
    )
    parser.add_argument("--batches", type=_positive(int), nargs="+", metavar="N")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        metavar="VARIANT",
        help=f"any of {', '.join(VARIANTS)}",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(MODELS),
        default=list(MODELS),
        metavar="MODEL",
        help=f"any of {', '.join(MODELS)} (default: all)",
    )
    parser.add_argument(
        "--width",
        type=_positive(float),
        default=1.0,
        help="channel width of the FCN-8s backbones (default 1.0, the real VGG16)",
    )
    parser.add_argument(
        "--warmup", type=_positive(int, zero=True), default=3, help="untimed calls (default 3)"
    )
    parser.add_argument(
        "--repeats", type=_positive(int), default=10, help="timed calls (default 10)"
    )
    parser.add_argument(
        "--notebooks", action="store_true", help="also time every chapter in fast mode"
    )
    parser.add_argument("--out", type=Path, help="JSON file (default: results/bench-DEVICE.json)")
    parser.set_defaults(handle=_bench)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_download,
    _add_train,
    _add_evaluate,
    _add_predict,
    _add_reproduce,
    _add_sweep,
    _add_weights,
    _add_bench,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command in ``COMMANDS`` registered."""
    parser = argparse.ArgumentParser(
        prog="fcnlib", description="Fully Convolutional Networks: the book's command line."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; bad input prints one line on stderr and returns 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded with results, as the command that reproduces them
    try:
        args.handle(args)
    except (OSError, ValueError) as error:
        print(f"fcnlib {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # fcnlib.train.Interrupted says where it saved
        print(
            f"fcnlib {args.command}: {stop or 'interrupted'}; run it again to resume",
            file=sys.stderr,
        )
        return 128 + getattr(stop, "signum", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
