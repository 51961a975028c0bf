"""The ``medrega`` command line: ``demo``, ``train``, ``eval``, ``detect``, ``identify``, ``report``, ``ask``, ``convert``, ``experiment``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def _demo(args) -> int:
    from medrega.demo import run_demo

    metrics = run_demo(args.out, train_minutes=args.minutes, max_steps=args.steps, seed=args.seed)
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}, indent=1, ensure_ascii=False))
    return 0


def _train(args) -> int:
    from medrega.training import load_config, train
    from medrega.training.config import TrainConfig

    overrides = {name: getattr(args, name) for name in TrainConfig.__dataclass_fields__ if getattr(args, name, None) is not None}
    config = load_config(args.config, overrides)
    result = train(config, resume=args.resume)
    print(f"trained {result.last_step} steps in {result.seconds:.0f} s; model exported to {Path(config.output_dir) / 'model'}")
    return 0


def _eval(args) -> int:
    from medrega.evaluation import load_eval_config, run_benchmark
    from medrega.evaluation.config import EvalConfig

    overrides = {name: getattr(args, name) for name in EvalConfig.__dataclass_fields__ if getattr(args, name, None) is not None}
    print(run_benchmark(config=load_eval_config(args.config, overrides)))
    return 0


def _assistant(args):
    from medrega.inference import Assistant

    return Assistant.from_pretrained(args.model, max_new_tokens=args.max_new_tokens)


def _finish(result, args) -> int:
    print(result.text if not args.json else json.dumps(result.to_dict(), ensure_ascii=False, indent=1))
    if getattr(args, "out", None):
        result.show().save(args.out)
        print(f"drawing saved to {args.out}", file=sys.stderr)
    return 0


def _detect(args) -> int:
    result = _assistant(args).detect(args.image, args.phrases, lang=args.lang)
    if result.not_found and not args.json:  # the JSON carries "found" and "not_found"
        print(f"not found: {', '.join(result.not_found)}", file=sys.stderr)
    return _finish(result, args)


def _identify(args) -> int:
    return _finish(_assistant(args).identify(args.image, tuple(args.box), lang=args.lang), args)


def _report(args) -> int:
    return _finish(_assistant(args).report(args.image, grounded=args.grounded, lang=args.lang), args)


def _ask(args) -> int:
    return _finish(_assistant(args).ask(args.images, args.question, lang=args.lang), args)


def _convert(args) -> int:
    from medrega.converters import convert

    if args.to_loc_tokens:  # SRC is a medrega text-box model directory (e.g. a converted MedRegA)
        from medrega.converters import to_loc_tokens

        print(to_loc_tokens(args.src, args.dst, init=args.init, max_shard_size=args.max_shard_size))
        return 0
    if args.codec == "loc":
        codec = {"type": "loc", "bins": 1000}
    elif args.codec == "text" or args.box_scale is not None:
        codec = {"type": "text", "scale": args.box_scale or 1000}
    else:
        codec = None  # the source's default: text on 0..1000, MedRegA's 0..999 for internvl_chat
    print(convert(args.src, args.dst, max_shard_size=args.max_shard_size, region_codec=codec, image_token_id=args.image_token_id))
    return 0


def _experiment_cg(args) -> int:
    import yaml

    from medrega.experiments import run_cg

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects FIELD=VALUE, got {item!r}")
        overrides[key.strip().replace("-", "_")] = yaml.safe_load(value)
    run_cg(
        args.plan, args.target, args.out, seeds=args.seeds, overrides=overrides, metric=args.metric, eval_config=args.eval_config,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, limit=args.limit, device=args.device,
        keep_checkpoints=args.keep_checkpoints, untrained=not args.no_untrained, progress=not args.no_progress,
    )  # fmt: skip
    print(f"CG table written to {Path(args.out) / 'cg.md'} (and cg.tsv, cg.json)")
    return 0


def _add_experiment(sub) -> None:
    exp = sub.add_parser("experiment", help="run experiments built from training + evaluation (cg: a Med-MAT CG plan)")
    kinds = exp.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    cg = kinds.add_parser("cg", help="train every mix of a CG plan per seed, evaluate on the target, print the CG table (resumes)")
    cg.add_argument("plan", help="a folder written by medrega.data.mat_planner.write_mixes (plan.tsv + one YAML per mix)")
    cg.add_argument("--target", action="append", default=[], help="the held-out target's benchmark file (repeatable)")
    cg.add_argument("--out", required=True, help="experiment folder (runs/, cg.md, cg.tsv, cg.json); rerun to resume")
    cg.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    cg.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a training config field for every mix (repeatable)")
    cg.add_argument("--metric", default="accuracy", help="the evaluation metric of the table")
    cg.add_argument("--eval-config", help="an eval config (eval/configs/*.yaml) for other evaluation settings")
    cg.add_argument("--batch-size", type=int, default=None)
    cg.add_argument("--max-new-tokens", type=int, default=None)
    cg.add_argument("--limit", type=int, default=None, help="evaluate the first N lines of each target file")
    cg.add_argument("--device", default=None, help="evaluation device (default: cuda when available)")
    cg.add_argument("--keep-checkpoints", action="store_true", help="keep training checkpoints (default: only the exported models)")
    cg.add_argument("--no-untrained", action="store_true", help="leave out the untrained model's row")
    cg.add_argument("--no-progress", action="store_true")
    cg.set_defaults(func=_experiment_cg)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medrega", description="Region-aware, bilingual medical multimodal LLMs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="train the tiny model on synthetic phantoms, evaluate grounding, draw it")
    demo.add_argument("--out", default="demo_out", help="output directory (metrics.json, grounding.png, model/)")
    demo.add_argument("--minutes", type=float, default=8.0, help="training time budget")
    demo.add_argument("--steps", type=int, default=None, help="stop after this many steps (overrides the time budget)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    from medrega.training.config import add_cli_overrides

    train = sub.add_parser("train", help="fine-tune (same as train/train.py; use the deepspeed launcher for ZeRO)")
    train.add_argument("--config", help="a YAML config (train/configs/*.yaml)")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    add_cli_overrides(train)
    train.set_defaults(func=_train)

    from medrega.evaluation.config import add_eval_arguments

    ev = sub.add_parser("eval", help="run benchmarks: predictions JSONL + metrics table (Markdown and JSON)")
    ev.add_argument("--config", help="an eval config (eval/configs/*.yaml); flags override it")
    add_eval_arguments(ev)
    ev.set_defaults(func=_eval)

    def inference(name: str, help_text: str):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--model", required=True, help="a model directory")
        p.add_argument("--lang", default="en", choices=("en", "zh"))
        p.add_argument("--out", help="save the drawing (PNG)")
        p.add_argument("--json", action="store_true", help="print the full result as JSON")
        p.add_argument("--max-new-tokens", type=int, default=256, help="generation budget")
        return p

    p = inference("detect", "find regions of phrases in an image (PNG/JPEG/DICOM)")
    p.add_argument("image")
    p.add_argument("phrases", nargs="+")
    p.set_defaults(func=_detect)
    p = inference("identify", "name the structure inside a box (original-image pixels)")
    p.add_argument("image")
    p.add_argument("--box", type=float, nargs=4, required=True, metavar=("X1", "Y1", "X2", "Y2"))
    p.set_defaults(func=_identify)
    p = inference("report", "write a report (optionally grounded)")
    p.add_argument("image")
    p.add_argument("--grounded", action="store_true")
    p.set_defaults(func=_report)
    p = inference("ask", "answer a question about one or several images")
    p.add_argument("images", nargs="+", help="one or more images, then the question")
    p.add_argument("question")
    p.set_defaults(func=_ask)

    conv = sub.add_parser("convert", help="convert a transformers LLaVA / InternVL or an original InternVL-Chat (MedRegA) checkpoint directory into a medrega model directory")
    conv.add_argument("src", help="the source directory (config.json, weights, tokenizer)")
    conv.add_argument("dst", help="the output directory (new or empty)")
    conv.add_argument("--max-shard-size", default="5GB", help="largest output safetensors shard")
    conv.add_argument("--codec", default=None, choices=("text", "loc"), help="box codec of the converted model (default: text; the source's scale)")
    conv.add_argument("--box-scale", type=int, default=None, help="coordinate scale of the text codec (default 1000; 999 for internvl_chat, MedRegA's)")
    conv.add_argument("--image-token-id", type=int, default=None, help="image-context token id, for a source without tokenizer files (internvl_chat)")
    conv.add_argument("--to-loc-tokens", action="store_true", help="SRC is a medrega model directory with text boxes (e.g. a converted MedRegA): move it onto 1000 loc tokens")
    conv.add_argument("--init", default="mean", choices=("mean", "digits", "ordinal"), help="with --to-loc-tokens: how the loc-token rows start (default: mean)")
    conv.set_defaults(func=_convert)
    _add_experiment(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medrega`` command."""
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("medrega")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
