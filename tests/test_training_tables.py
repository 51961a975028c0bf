"""Training reads the model's own tables: stages and parts are defined once, in medrega.models.stages."""

import torch

from medrega.models import MedRegAForConditionalGeneration, tiny_config
from medrega.models.stages import PARTS, STAGES
from medrega.training import config as training_config
from medrega.training.optim import param_groups


def test_stages_are_one_table():
    assert training_config.STAGES is STAGES


def test_param_groups_follow_the_parts_table_not_parameter_names():
    torch.manual_seed(0)
    box_head = {"box_token_id": 200, "loc_token_ids": list(range(210, 220))}  # every part present
    config = tiny_config(300, 299, hidden_size=32, num_layers=1, vision_width=32, vision_layers=1, image_size=32, region_codec={"type": "loc", "bins": 10}, box_head=box_head)
    model = MedRegAForConditionalGeneration(config)
    model.language_model.model.vision_projector = torch.nn.Linear(4, 4)  # a language-model layer whose name says otherwise
    lrs = {"vision": 1.0, "projector": 2.0, "language": 3.0, "box_head": 4.0}
    groups = param_groups(model, lrs, weight_decay=0.1)
    for part, attr in PARTS.items():
        of_part = [g for g in groups if g["name"] in (part, f"{part}_no_decay")]
        assert {id(p) for g in of_part for p in g["params"]} == {id(p) for p in getattr(model, attr).parameters()}, part
        assert {g["lr"] for g in of_part} == {lrs[part]}


def test_training_adamw_is_fused_and_makes_the_per_tensor_update():
    import torch

    from medrega.training.optim import adamw

    torch.manual_seed(0)
    weights = [torch.randn(7, 5), torch.randn(5)]
    fused_params = [torch.nn.Parameter(w.clone()) for w in weights]
    loop_params = [torch.nn.Parameter(w.clone()) for w in weights]
    fused = adamw([{"params": fused_params, "lr": 1e-2, "weight_decay": 0.1}])
    loop = torch.optim.AdamW([{"params": loop_params, "lr": 1e-2, "weight_decay": 0.1}], foreach=False)
    assert fused.defaults["fused"]
    for _ in range(5):
        grads = [torch.randn_like(w) for w in weights]
        for params, optimizer in ((fused_params, fused), (loop_params, loop)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
    for a, b in zip(fused_params, loop_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
