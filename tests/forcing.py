"""Test helper: a logits processor that makes a model write chosen tokens (model output chosen by the test)."""

import torch


class ForceTokens:
    """Make the model write ``ids`` (then ``eos``), whatever its weights."""

    def __init__(self, ids, eos):
        self.ids, self.eos, self.start = [*ids, eos], eos, None

    def __call__(self, input_ids, scores):
        self.start = input_ids.shape[1] if self.start is None else self.start
        step = input_ids.shape[1] - self.start
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.ids[min(step, len(self.ids) - 1)]] = 0.0
        return forced
