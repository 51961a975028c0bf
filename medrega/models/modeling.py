"""``MedRegAForConditionalGeneration``: vision tower + projector + any causal LM, LLaVA-style.

Reference: transformers ``models/llava/modeling_llava.py`` (``LlavaModel.forward``). The processor
expands every ``<image>`` into ``config.num_image_tokens`` placeholder ids; ``forward`` embeds the
text, replaces the placeholder runs with the projected image features in order (row-major over the
batch, so each sample takes its images in order) and runs the language model. Counts are checked
with tensor ops and a mismatch raises a ``ValueError`` naming the sample.

The loss applies ``lm_head`` only at positions whose shifted label is set, so no full-vocabulary
logits are built for prompt or image tokens. Training stages and LoRA (:class:`.stages.TrainingStages`)
and building from pretrained parts (:class:`.parts.PartsBuilder`) are mixed into the model class.
"""

from __future__ import annotations

from dataclasses import make_dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPooling, ModelOutput
from transformers.utils import can_return_tuple

from medrega.data.collate import IGNORE_INDEX
from medrega.models.box_head import BoxDecoding, BoxHead, answer_boxes, bin_lookup
from medrega.models.compat import CACHE_NAME
from medrega.models.configuration import MedRegAConfig
from medrega.models.head_loss import linear_cross_entropy
from medrega.models.image_groups import identical_images
from medrega.models.image_positions import sequential_positions, shared_image_positions
from medrega.models.parts import PartsBuilder
from medrega.models.projector import MultiModalProjector
from medrega.models.stages import TrainingStages
from medrega.models.swiglu import use_lean_mlp_
from medrega.models.vision import VisionTower, image_token_count

__all__ = ["MedRegAPreTrainedModel", "MedRegAForConditionalGeneration", "MedRegAOutput", "IGNORE_INDEX"]



_OUTPUT_DOC = """Output of :meth:`MedRegAForConditionalGeneration.forward`.

With ``labels`` in training mode ``logits`` is ``None``: the loss builds logits only where labels
are set. The KV cache is named as the installed transformers names it (``cache`` or ``past_key_values``).
"""
MedRegAOutput = make_dataclass(
    "MedRegAOutput",
    [
        ("loss", torch.Tensor | None, None),
        ("logits", torch.Tensor | None, None),
        (CACHE_NAME, Cache | None, None),
        ("hidden_states", tuple[torch.Tensor] | None, None),
        ("attentions", tuple[torch.Tensor] | None, None),
        ("image_hidden_states", torch.Tensor | None, None),
    ],
    bases=(ModelOutput,),
    namespace={"__module__": __name__, "__doc__": _OUTPUT_DOC},
)


class MedRegAPreTrainedModel(PreTrainedModel):
    config_class = MedRegAConfig
    config: MedRegAConfig
    base_model_prefix = ""
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        """Projector: normal(0, initializer_range) weights, zero biases, unit LayerNorm."""
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class MedRegAForConditionalGeneration(MedRegAPreTrainedModel, GenerationMixin, TrainingStages, PartsBuilder):
    """MedRegA: image features scattered into a causal LM's input embeddings.

    Args:
        config: the model configuration; a ``num_image_tokens`` of ``None`` is counted from the tower and
            projector and written into it, one that disagrees with them raises.
        vision_model: an already built (pretrained) vision backbone; built from ``config`` when ``None``.
        language_model: an already built (pretrained) causal LM; built from ``config.text_config`` when ``None``.
    """

    def __init__(self, config: MedRegAConfig, vision_model: nn.Module | None = None, language_model: PreTrainedModel | None = None):
        _set_num_image_tokens(config)
        super().__init__(config)
        self.vision_tower = VisionTower(config.vision_config, config.vision_feature_layer, config.vision_feature_select_strategy, model=vision_model)
        proj = config.projector_config
        self.projector = MultiModalProjector(
            self.vision_tower.hidden_size,
            config.text_config.hidden_size,
            depth=proj["depth"],
            hidden_size=proj["hidden_size"],
            layer_norm=proj["layer_norm"],
            pixel_shuffle=proj["pixel_shuffle"],
            pixel_shuffle_version=proj["pixel_shuffle_version"],
            activation=proj["activation"],
            bias=proj["bias"],
        )
        self.language_model = language_model if language_model is not None else AutoModelForCausalLM.from_config(config.text_config)
        use_lean_mlp_(self.language_model)
        self.rope_deltas: torch.Tensor | None = None  # (B,) kept by a prefill with image_positions="shared"
        self._box_decoding: BoxDecoding | None = None  # kept by a generation prefill when there is a box head
        self._box_lookup_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.post_init()
        # built after the other parts' init, so that adding it leaves their random init as it was; torch's
        # default init (the head was measured with it)
        self.box_head = None if config.box_head is None else BoxHead(config.text_config.hidden_size, heads=config.box_head["heads"])

    def _box_lookups(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The loc tokens' ids in bin order and each token's bin (-1: not a loc token), on ``device``
        (plain tensors from the config, not buffers: a model loaded on the meta device would not fill them)."""
        vocab = self.get_input_embeddings().num_embeddings
        cached = self._box_lookup_cache
        if cached is None or cached[0].device != torch.device(device) or len(cached[1]) != vocab:
            ids = self.config.box_head["loc_token_ids"]
            cached = self._box_lookup_cache = (torch.tensor(ids, device=device), bin_lookup(ids, vocab).to(device))
        return cached

    # -- embeddings (so resize_token_embeddings and generate work on the whole model) -----------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    # -- images ------------------------------------------------------------------------------------
    @can_return_tuple
    def get_image_features(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, **kwargs) -> BaseModelOutputWithPooling:
        """Encode and project images (or tiles), as transformers' LLaVA does.

        Args:
            pixel_values: ``(N, 3, S, S)`` images.
            output_hidden_states: also return the vision tower's hidden states (Hugging Face towers).
            return_dict: ``False`` returns the output as a tuple.

        Returns:
            ``BaseModelOutputWithPooling``: ``pooler_output`` the projected features
            ``(N, num_image_tokens, text_hidden)``, ``last_hidden_state`` the selected vision features
            ``(N, tokens, vision_hidden)``, ``hidden_states`` when asked for.
        """
        dtype = next(self.projector.parameters()).dtype
        vision = self.vision_tower(pixel_values.to(dtype), output_hidden_states=bool(output_hidden_states))
        features = self.projector(vision.last_hidden_state)
        if features.shape[1] != self.config.num_image_tokens:
            raise ValueError(f"the vision tower and projector give {features.shape[1]} tokens per image, config.num_image_tokens is {self.config.num_image_tokens}")
        return BaseModelOutputWithPooling(last_hidden_state=vision.last_hidden_state, pooler_output=features, hidden_states=vision.hidden_states)

    def _encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected features ``(N, n, H)``; identical images of the batch go through the vision tower once
        when it is frozen or in eval mode (samples that share a scan: several questions on one image)."""
        if pixel_values.shape[0] > 1 and (not self.training or not any(p.requires_grad for p in self.vision_tower.parameters())):
            groups = identical_images(pixel_values)
            if groups is not None:
                first, inverse = groups
                return self.get_image_features(pixel_values[first]).pooler_output[inverse]
        return self.get_image_features(pixel_values).pooler_output

    def _check_placeholders(self, is_image: torch.Tensor, num_images: int) -> None:
        """Raise when placeholders and images disagree; ``is_image`` is ``(B, T)``. One host sync."""
        per_image = self.config.num_image_tokens
        counts = is_image.sum(dim=1)  # (B,)
        ragged = counts % per_image != 0
        wrong_total = (counts.sum() != num_images * per_image).view(1)
        if not bool(torch.cat([ragged, wrong_total]).any()):
            return
        counts_list = counts.tolist()
        for sample, count in enumerate(counts_list):
            if count % per_image:
                raise ValueError(
                    f"sample {sample} has {count} <image> placeholder tokens, not a multiple of num_image_tokens={per_image} "
                    "(every <image> must be expanded by the processor into exactly that many)"
                )
        needed = 0
        for sample, count in enumerate(counts_list):
            needed += count // per_image
            if needed > num_images:
                raise ValueError(f"sample {sample} needs image {needed} of the batch but pixel_values holds only {num_images} images (placeholder runs per sample: {[c // per_image for c in counts_list]})")
        raise ValueError(
            f"pixel_values holds {num_images} images but the samples' placeholders ask for only {needed} "
            f"(placeholder runs per sample 0..{len(counts_list) - 1}: {[c // per_image for c in counts_list]})"
        )

    def _placeholder_mask(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` positions of ``<image>`` placeholders; from ``inputs_embeds`` (rows equal to the
        placeholder's embedding) when no ids are given, as LLaVA does."""
        if self.config.image_token_id is None:
            raise ValueError("config.image_token_id is not set; it must name the tokenizer's <image> token")
        if input_ids is not None:
            return input_ids == self.config.image_token_id
        token = torch.tensor(self.config.image_token_id, device=inputs_embeds.device)
        return (inputs_embeds == self.get_input_embeddings()(token)).all(-1)

    def _embed(self, input_ids, inputs_embeds, pixel_values, prefill: bool):
        """Text embeddings with image features scattered in: ``(embeds, features, is_image)``; the
        placeholder mask ``is_image`` is ``None`` where there is nothing to look for."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is None and not prefill:
            return inputs_embeds, None, None  # decoding step: images were consumed at prefill
        if pixel_values is None and input_ids is None:
            return inputs_embeds, None, None  # text embeddings only
        is_image = self._placeholder_mask(input_ids, inputs_embeds)  # (B, T)
        num_images = 0 if pixel_values is None else pixel_values.shape[0]
        self._check_placeholders(is_image, num_images)
        if num_images == 0:
            return inputs_embeds, None, is_image
        features = self._encode_images(pixel_values)  # (N, n, H)
        flat = features.reshape(-1, features.shape[-1]).to(inputs_embeds.dtype)  # (N*n, H)
        return inputs_embeds.masked_scatter(is_image.unsqueeze(-1), flat), features, is_image

    def _shared_positions(self, is_image, attention_mask, position_ids, cache, prefill: bool, shape: tuple[int, int], device):
        """Positions and attention mask for ``config.image_positions == "shared"``: the prompt's image
        tokens share one position per image (:mod:`.image_positions`); decoding steps are shifted by the
        ``rope_deltas`` that the prefill kept, as Qwen2-VL does."""
        if cache is None and attention_mask is None and position_ids is not None:
            raise ValueError("image_positions='shared' needs padded batches with an attention_mask; packed rows (position_ids without a mask) are not supported")
        if prefill:
            base = position_ids if position_ids is not None else sequential_positions(attention_mask, shape, device)
            if is_image is None:
                positions, self.rope_deltas = base, torch.zeros(shape[0], dtype=torch.long, device=device)
            else:
                positions, self.rope_deltas = shared_image_positions(base, is_image, self.config.num_image_tokens)
            if attention_mask is None and cache is None:
                attention_mask = torch.ones(shape, dtype=torch.long, device=device)  # not a packed-row guess from positions
            return positions, attention_mask
        if self.rope_deltas is None or self.rope_deltas.shape[0] != shape[0]:
            raise ValueError("image_positions='shared': a decoding step needs the prefill of the same batch first (its rope_deltas)")
        if position_ids is None:
            position_ids = torch.arange(shape[1], device=device).expand(shape) + cache.get_seq_length()
        return position_ids - self.rope_deltas[:, None], attention_mask

    # -- forward -----------------------------------------------------------------------------------
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        num_items_in_batch: int | torch.Tensor | None = None,
        return_logits: bool | None = None,
        cache: Cache | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> MedRegAOutput:
        """Embed, scatter image features, run the language model; loss and/or logits.

        Args:
            input_ids: ``(B, T)`` token ids with ``num_image_tokens`` placeholders per image.
            attention_mask: ``(B, T)``, 1 for real tokens. ``None`` with ``position_ids`` restarting at 0
                inside a row gives a block-diagonal mask (packed samples).
            pixel_values: ``(N, 3, S, S)`` images of the whole batch, in sample order.
            labels: ``(B, T)`` targets aligned with ``input_ids`` (shifted inside); ``-100`` is ignored.
            position_ids: ``(B, T)`` positions (packed sequences restart at 0).
            inputs_embeds: ``(B, T, H)`` instead of ``input_ids``; with ``pixel_values`` the placeholders
                are the rows equal to the ``<image>`` embedding.
            use_cache: return a KV cache.
            logits_to_keep: compute logits for only the last ``k`` positions (0: all).
            num_items_in_batch: when given, the loss is the sum of token losses divided by it
                (label tokens across micro-batches); otherwise the mean over label tokens.
            return_logits: with ``labels``, also return logits. Default: only in eval mode, so that
                ``Trainer.evaluate`` receives logits; training builds logits only at labelled positions.
            cache: KV cache (generation); ``past_key_values`` is the name before transformers 5.24.
            return_dict: ``False`` returns a tuple.
        """
        if cache is not None and past_key_values is not None:
            raise ValueError("give the KV cache as `cache` or `past_key_values`, not both")
        cache = cache if cache is not None else past_key_values
        prefill = cache is None or cache.get_seq_length() == 0
        inputs_embeds, features, is_image = self._embed(input_ids, inputs_embeds, pixel_values, prefill)
        if self.config.image_positions == "shared":
            position_ids, attention_mask = self._shared_positions(is_image, attention_mask, position_ids, cache, prefill, inputs_embeds.shape[:2], inputs_embeds.device)
        if use_cache is None and labels is not None:
            use_cache = False  # training needs no cache (and packed rows get their block mask only without one)
        outputs = self.language_model.get_decoder()(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            return_dict=True,
            **{CACHE_NAME: cache},
            **kwargs,
        )
        hidden = outputs.last_hidden_state  # (B, T, H)
        loss = logits = None
        if labels is not None:
            loss = self._label_loss(hidden, labels, num_items_in_batch)
            if self.box_head is not None and features is not None and input_ids is not None:
                loss = loss + self._box_loss(hidden, input_ids, labels, features, is_image, num_items_in_batch)
        if labels is None or (not self.training if return_logits is None else return_logits):
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.get_output_embeddings()(hidden[:, keep, :])
        if self.box_head is not None and labels is None and not self.training:
            self._decode_boxes(input_ids, hidden, logits, features, is_image, prefill)
        return MedRegAOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=features,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
        )

    def _label_loss(self, hidden: torch.Tensor, labels: torch.Tensor, num_items_in_batch) -> torch.Tensor:
        targets = labels[:, 1:].to(hidden.device)  # (B, T-1): token t predicts label t+1
        keep = targets != IGNORE_INDEX
        selected = hidden[:, :-1][keep]  # (K, H): only positions with a label
        head = self.get_output_embeddings()
        if _plain_head(head):
            total = linear_cross_entropy(selected, head.weight, targets[keep])
        else:  # adapters on the head, or ZeRO-3 partitioned weights: through the module
            total = F.cross_entropy(head(selected).float(), targets[keep], reduction="sum")
        if num_items_in_batch is None:
            return total / keep.sum().clamp(min=1)
        if isinstance(num_items_in_batch, torch.Tensor):
            num_items_in_batch = num_items_in_batch.to(total.device)
        return total / num_items_in_batch

    def _image_tokens_per_row(self, features: torch.Tensor, is_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, n, H)`` each row's first image's tokens and ``(B,)`` whether the row holds exactly one image."""
        counts = is_image.sum(dim=1) // self.config.num_image_tokens
        first = (counts.cumsum(0) - counts).clamp(max=features.shape[0] - 1)
        return features[first], counts == 1

    def _box_loss(self, hidden, input_ids, labels, features, is_image, num_items_in_batch) -> torch.Tensor:
        """``loss_weight`` x the mean L1 between the box head's boxes and the answers' own (fractions of
        the image side); with ``num_items_in_batch``, weighted by this micro-batch's share of label tokens."""
        spec, labels = self.config.box_head, labels.to(input_ids.device)
        tokens, rows_ok = self._image_tokens_per_row(features, is_image)
        tokens = tokens.to(hidden.dtype)
        loss = hidden.new_zeros((), dtype=torch.float32) + 0.0 * sum(p.sum() for p in self.box_head.parameters())  # every parameter gets a gradient
        loc_ids, bin_of = self._box_lookups(input_ids.device)
        rows, cols, bins = answer_boxes(input_ids, labels, spec["box_token_id"], bin_of, rows_ok)
        if len(rows):
            predicted = self.box_head(hidden[rows, cols], tokens[rows]).float()
            loss = loss + spec["loss_weight"] * (predicted - (bins.float() + 0.5) / len(loc_ids)).abs().mean()
        if num_items_in_batch is not None:
            share = (labels[:, 1:] != IGNORE_INDEX).sum() / torch.as_tensor(num_items_in_batch, device=loss.device)
            loss = loss * share.to(loss.device)
        return loss

    def _decode_boxes(self, input_ids, hidden, logits, features, is_image, prefill: bool) -> None:
        """Generation with a box head: a prefill keeps each row's image tokens; every step forces the
        head's loc tokens after a ``<box>`` (:class:`.box_head.BoxDecoding`)."""
        if prefill:
            self._box_decoding = None if features is None else BoxDecoding(*self._image_tokens_per_row(features, is_image))
        if self._box_decoding is None or input_ids is None or logits is None:
            return
        self._box_decoding.step(self.box_head, input_ids, hidden, logits, self.config.box_head["box_token_id"], *self._box_lookups(input_ids.device))

    def prepare_inputs_for_generation(self, *args, pixel_values: torch.Tensor | None = None, **kwargs) -> dict:
        """transformers' preparation, but images also reach a prefill that transformers does not
        count as the first iteration (a draft model in assisted generation starts from an empty cache)."""
        model_inputs = super().prepare_inputs_for_generation(*args, pixel_values=pixel_values, **kwargs)
        cache = model_inputs.get(CACHE_NAME)
        if pixel_values is not None and (cache is None or cache.get_seq_length() == 0):
            model_inputs["pixel_values"] = pixel_values
        return model_inputs


def _set_num_image_tokens(config: MedRegAConfig) -> None:
    """Fill in ``config.num_image_tokens`` from the tower and projector, or check it against them."""
    count = image_token_count(config)
    if config.num_image_tokens is None:
        config.num_image_tokens = count
    elif config.num_image_tokens != count:
        raise ValueError(
            f"config.num_image_tokens is {config.num_image_tokens} but the vision tower and projector give {count} tokens per image; "
            "leave it None to have it counted"
        )


def _plain_head(head: nn.Module) -> bool:
    """A bias-free ``nn.Linear`` whose weight is a whole local tensor (not a DeepSpeed ZeRO-3 shard)."""
    return type(head) is nn.Linear and head.bias is None and not hasattr(head.weight, "ds_id")
