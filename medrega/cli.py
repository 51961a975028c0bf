"""The ``medrega`` command line: ``demo``, ``train``, ``eval``, ``detect``, ``identify``, ``report``, ``ask``, ``convert``."""

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
    return _finish(_assistant(args).detect(args.image, args.phrases, lang=args.lang), args)


def _identify(args) -> int:
    return _finish(_assistant(args).identify(args.image, tuple(args.box), lang=args.lang), args)


def _report(args) -> int:
    return _finish(_assistant(args).report(args.image, grounded=args.grounded, lang=args.lang), args)


def _ask(args) -> int:
    return _finish(_assistant(args).ask(args.images, args.question, lang=args.lang), args)


def _convert(args) -> int:
    from medrega.converters import convert

    codec = {"type": "loc", "bins": 1000} if args.codec == "loc" else {"type": "text", "scale": args.box_scale}
    print(convert(args.src, args.dst, max_shard_size=args.max_shard_size, region_codec=codec))
    return 0


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

    conv = sub.add_parser("convert", help="convert a transformers LLaVA or InternVL checkpoint directory into a medrega model directory")
    conv.add_argument("src", help="the source directory (config.json, weights, tokenizer)")
    conv.add_argument("dst", help="the output directory (new or empty)")
    conv.add_argument("--max-shard-size", default="5GB", help="largest output safetensors shard")
    conv.add_argument("--codec", default="text", choices=("text", "loc"), help="box codec of the converted model")
    conv.add_argument("--box-scale", type=int, default=1000, help="coordinate scale of the text codec")
    conv.set_defaults(func=_convert)
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
