"""Fine-tune a MedRegA model.

One process:        python train/train.py --config train/configs/demo_tiny.yaml
DeepSpeed (ZeRO):   deepspeed train/train.py --config train/configs/instruction_lora.yaml
Several machines:   deepspeed --hostfile hostfile train/train.py --config ...   (see README)
Resume:             add --resume (continues from output_dir/checkpoints/latest)
Every config field is also a flag, e.g. --max-steps 20 --lr 3e-4.
"""

import sys

from medrega.cli import main

if __name__ == "__main__":
    # The deepspeed launcher appends --local_rank=N; the rank is read from the environment instead.
    argv = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    raise SystemExit(main(["train", *argv]))
