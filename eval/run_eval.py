"""Evaluate a model on benchmark files: predictions JSONL, then a metrics table (Markdown and JSON).

    python eval/run_eval.py --config eval/configs/med_mim.yaml --model runs/instruction/model
    python eval/run_eval.py --model runs/demo/model --data phantoms.jsonl --out runs/eval --limit 50

Every config field is also a flag (``--batch-size 16``, ``--constrained true``); flags override the
config. Interrupted runs resume: run the same command again.
"""

import argparse
import logging
import sys

from medrega.evaluation import load_eval_config, run_benchmark
from medrega.evaluation.config import add_eval_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="an eval config (eval/configs/*.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_eval_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", datefmt="%H:%M:%S")
    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "no_progress")}
    config = load_eval_config(args.config, overrides)
    print(run_benchmark(config=config, progress=not args.no_progress))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
