"""Region codecs as config dicts (``RegionCodec.to_config`` and ``codec_from_config`` are inverses) and the loc tokens' ids."""

import pytest

from medrega.grounding import LocTokenCodec, TextBoxCodec, codec_from_config


@pytest.mark.parametrize("codec", [LocTokenCodec(), LocTokenCodec(bins=500, max_images=4), TextBoxCodec(), TextBoxCodec(scale=999, max_images=2)])
def test_to_config_round_trip(codec):
    back = codec_from_config(codec.to_config())
    assert type(back) is type(codec) and vars(back) == vars(codec)
    assert back.to_config() == codec.to_config()



def test_loc_token_ids_in_bin_order(tiny_tokenizer):
    codec = LocTokenCodec(bins=20, max_images=2)
    with pytest.raises(ValueError, match="lacks loc tokens"):
        codec.loc_token_ids(tiny_tokenizer)
    codec.add_to_tokenizer(tiny_tokenizer)
    ids = codec.loc_token_ids(tiny_tokenizer)
    assert len(ids) == 20 and len(set(ids)) == 20
    assert tiny_tokenizer.convert_ids_to_tokens(ids) == [f"<loc_{k}>" for k in range(20)]
