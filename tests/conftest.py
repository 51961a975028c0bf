from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"team fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture
def tiny_tokenizer():
    from medrega.tokenization import train_bpe_tokenizer

    lines = ["the left lung shows a nodule", "右肺上叶见结节，左肺未见异常。", "heart size is normal"] * 20
    return train_bpe_tokenizer(lines, vocab_size=400)
