"""The bots' texts render as ``string.Template.safe_substitute`` renders them."""

from __future__ import annotations

from string import Template

from hypothesis import given
from hypothesis import strategies as st

from bots import templates
from bots.templates import TEXTS, render

VALUES = {"number": 42, "subject": "Refund $5", "name": "Ann", "service": "Acme"}


def test_every_text_renders_as_template_does() -> None:
    for language, table in TEXTS.items():
        for key, text in table.items():
            expected = Template(text).safe_substitute({k: str(v) for k, v in VALUES.items()})
            assert render(key, language, **VALUES) == expected, (language, key)


def test_an_unknown_language_falls_back_to_english() -> None:
    assert render("ack_subject", "fr-CA", number=7, subject="Hi") == "[#7] Hi"
    assert render("ack_subject", "zh-TW", number=7, subject="Hi") == "[#7] Hi"


@given(
    st.text(alphabet="$${}_aZ9 .", max_size=40),
    st.dictionaries(st.sampled_from(["a", "Z", "a9", "_", "aZ"]), st.integers(), max_size=3),
)
def test_any_text_renders_as_template_does(text: str, values: dict[str, int]) -> None:
    templates.TEXTS["en"]["probe"] = text
    try:
        expected = Template(text).safe_substitute({k: str(v) for k, v in values.items()})
        assert render("probe", "en", **values) == expected
    finally:
        del templates.TEXTS["en"]["probe"]
