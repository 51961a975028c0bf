"""Region codecs as config dicts: ``RegionCodec.to_config`` and ``codec_from_config`` are inverses."""

import pytest

from medrega.grounding import LocTokenCodec, TextBoxCodec, codec_from_config


@pytest.mark.parametrize("codec", [LocTokenCodec(), LocTokenCodec(bins=500, max_images=4), TextBoxCodec(), TextBoxCodec(scale=999, max_images=2)])
def test_to_config_round_trip(codec):
    back = codec_from_config(codec.to_config())
    assert type(back) is type(codec) and vars(back) == vars(codec)
    assert back.to_config() == codec.to_config()

