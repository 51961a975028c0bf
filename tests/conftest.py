import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _find_fixtures() -> Path | None:
    """Real-format sample files: $MEDREGA_FIXTURES, else ``shared/fixtures`` beside the checkout
    (or beside any of its parent folders), else /work/shared/fixtures."""
    if os.environ.get("MEDREGA_FIXTURES"):
        return Path(os.environ["MEDREGA_FIXTURES"])
    for parent in ROOT.parents:
        if (parent / "shared" / "fixtures").is_dir():
            return parent / "shared" / "fixtures"
    fallback = Path("/work/shared/fixtures")
    return fallback if fallback.is_dir() else None


FIXTURES = _find_fixtures()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if FIXTURES is None or not FIXTURES.is_dir():
        pytest.fail("real-format fixtures not found: set MEDREGA_FIXTURES to the shared/fixtures folder")
    return FIXTURES


@pytest.fixture
def tiny_tokenizer():
    from medrega.tokenization import train_bpe_tokenizer

    lines = ["the left lung shows a nodule", "右肺上叶见结节，左肺未见异常。", "heart size is normal"] * 20
    return train_bpe_tokenizer(lines, vocab_size=400)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's torch on one thread: tiny models run fastest so, and leave the other cores to the
    rest of the suite. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
