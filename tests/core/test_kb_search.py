"""KB suggestions: right article for English and Chinese questions, typos, gaps, language, limit."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from core import kb
from core.kb import Article
from core.kb_search import MIN_SCORE, KbIndex, terms
from core.persistence.database import open_database
from core.persistence.migrate import upgrade

ARTICLES = [
    Article(
        "reset-password",
        "Resetting your password",
        "Open the login page, choose 'Forgot password' and follow the link we email you. "
        "The link is valid for 30 minutes.",
        "password, login, reset, sign in",
    ),
    Article(
        "export-data",
        "Exporting your data as CSV",
        "Go to Settings > Data > Export and choose CSV. Large exports arrive by email.",
        "export, csv, download, data",
    ),
    Article(
        "two-factor",
        "Two-factor authentication codes",
        "If SMS codes do not arrive, switch to an authenticator app under Security.",
        "2fa, sms, code, two-factor, authenticator",
    ),
    Article(
        "refunds",
        "Refunds and double charges",
        "Duplicate charges are refunded automatically within 3-5 business days.",
        "refund, charge, payment, money back",
    ),
    Article(
        "cancel-subscription",
        "Cancelling a subscription",
        "Subscriptions can be cancelled any time under Billing; they end with the period.",
        "cancel, subscription, billing",
    ),
    Article(
        "invoice-vat",
        "VAT on invoices",
        "The VAT rate follows your billing country. Update it under Billing > Tax details.",
        "invoice, vat, tax, billing",
    ),
    Article(
        "app-crash",
        "The app closes on start",
        "Update to the latest version, then clear the app cache under Settings > Storage.",
        "crash, app, start, update",
    ),
    Article(
        "delivery-times",
        "Delivery times",
        "Standard delivery takes 2-4 business days; tracking updates once a day.",
        "delivery, parcel, shipping, tracking, late",
    ),
    Article(
        "api-errors",
        "API error codes",
        "A 500 from the API is retried safely with the same Idempotency-Key. "
        "Persistent errors: send us the request id.",
        "api, 500, error, idempotency",
    ),
    Article(
        "reset-password-zh",
        "如何重置密码",
        "在登录页面点击“忘记密码”，按照邮件中的链接操作。链接30分钟内有效。",
        "密码, 登录, 重置",
        "zh",
    ),
    Article(
        "delivery-zh",
        "配送时间",
        "标准配送需要2到4个工作日，物流信息每天更新一次。",
        "配送, 快递, 物流",
        "zh",
    ),
]


@pytest.fixture(scope="module")
def index() -> KbIndex:
    return KbIndex.build(ARTICLES)


def slugs(index: KbIndex, text: str, language: str | None = None, limit: int = 3) -> list[str]:
    return [s.slug for s in index.suggest(text, language, limit)]


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("I forgot my password, how can I reset it?", "reset-password"),
        ("How do I download all my data?", "export-data"),
        ("my sms code never arrives", "two-factor"),
        ("I was charged twice for my order, I want my money back", "refunds"),
        ("How can I cancel my subscription?", "cancel-subscription"),
        ("Which VAT rate is on my invoice?", "invoice-vat"),
        ("The app crashes every time I start it", "app-crash"),
        ("Where is my parcel? It is late", "delivery-times"),
        ("The API returns a 500 error", "api-errors"),
        (
            "Hi team, since yesterday I can't sign in, it says wrong password. Help!",
            "reset-password",
        ),
    ],
)
def test_an_english_question_finds_its_article_first(
    index: KbIndex, question: str, expected: str
) -> None:
    assert slugs(index, question, "en")[:1] == [expected]
    assert slugs(index, question)[:1] == [expected]  # no language given: same answer


@pytest.mark.parametrize("language", ["zh", "zh-CN", None])
def test_a_chinese_question_finds_the_chinese_article(index: KbIndex, language: str | None) -> None:
    assert slugs(index, "我忘记了密码怎么办", language)[:1] == ["reset-password-zh"]
    assert slugs(index, "我的快递三天了还没到", language)[:1] == ["delivery-zh"]


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("pasword reset", "reset-password"),
        ("cancel my subscribtion", "cancel-subscription"),
        ("how do I exprot my data", "export-data"),
        ("I want a refnud", "refunds"),
        ("authenticater app", "two-factor"),
    ],
)
def test_typos_still_match(index: KbIndex, question: str, expected: str) -> None:
    assert slugs(index, question)[:1] == [expected]


@pytest.mark.parametrize(
    "question",
    [
        "What's the weather like in Paris tomorrow?",
        "Do you sell garden furniture?",
        "Who won the football match last night?",
        "Thanks, have a nice day!",
        "明天北京的天气怎么样",
        "推荐一本关于历史的小说",
    ],
)
def test_an_unrelated_question_gets_no_suggestion(index: KbIndex, question: str) -> None:
    assert index.suggest(question) == []  # the "KB gap" outcome
    assert index.suggest(question, "en") == []


@pytest.mark.parametrize("text", ["", "   ", "?!...", "\n\t", "the and of"])
def test_empty_or_contentless_text_gets_no_suggestion(index: KbIndex, text: str) -> None:
    assert index.suggest(text) == []


def test_an_empty_kb_suggests_nothing() -> None:
    assert KbIndex.build([]).suggest("I forgot my password") == []


def test_the_customers_language_is_preferred() -> None:
    english = ARTICLES[0]
    german = replace(english, slug="reset-password-de", language="de")
    both = KbIndex.build([english, german])
    question = "how do I reset my password"
    assert slugs(both, question, "de")[0] == german.slug
    assert slugs(both, question, "de-AT")[0] == german.slug  # region subtags don't matter
    assert slugs(both, question, "en")[0] == english.slug
    preferred, other = both.suggest(question, "de")
    assert preferred.score > other.score


def test_another_language_is_still_suggested_when_nothing_else_fits(index: KbIndex) -> None:
    # preference, not a filter: an English-only answer beats a KB gap for a Chinese customer
    assert slugs(index, "reset password", "zh")[:1] == ["reset-password"]
    assert index.suggest("reset password", "zh")[0].score < index.suggest("reset password")[0].score


def test_limit_caps_the_suggestions_and_keeps_the_order(index: KbIndex) -> None:
    question = "billing: VAT on my invoice and how to cancel the subscription"
    three = index.suggest(question, limit=3)
    assert len(three) >= 2  # both billing articles qualify
    assert [s.score for s in three] == sorted((s.score for s in three), reverse=True)
    assert index.suggest(question, limit=1) == three[:1]
    assert index.suggest(question, limit=0) == []
    assert len(index.suggest(question, limit=10)) <= len(ARTICLES)
    assert len(index.suggest("refund", limit=3)) <= 3


def test_a_suggestion_says_what_matched(index: KbIndex) -> None:
    by_slug = {a.slug: a for a in ARTICLES}
    for question in ("Delivery times", "money back", "follow the link you email me"):
        best = index.suggest(question)[0]
        assert best.title == by_slug[best.slug].title
        assert MIN_SCORE <= best.score <= 100
    assert index.suggest("Delivery times")[0].why == "title"
    assert index.suggest("money back")[0].why == "keywords"
    assert index.suggest("follow the link you email me")[0].why == "body"


def test_rare_words_outweigh_common_ones() -> None:
    # "account" is in every article, so it must not decide the ranking; "invoice" does
    common = [
        Article(f"a{i}", f"Account topic {i}", f"Your account and topic {i}.", "account")
        for i in range(20)
    ]
    rare = Article("invoices", "Account invoices", "Invoices for your account.", "invoice")
    index = KbIndex.build([*common, rare])
    assert slugs(index, "where is the invoice for my account")[:1] == ["invoices"]


def test_terms_are_words_for_english_and_bigrams_for_cjk() -> None:
    assert terms("Resetting my Passwords") == terms("reset the password")
    assert "密码" in terms("我忘记了密码怎么办")
    assert "怎么" not in terms("我忘记了密码怎么办")  # a question word, not a topic
    assert terms("パスワード") == ["パス", "スワ", "ワー", "ード"]
    assert terms("비밀번호") == ["비밀", "밀번", "번호"]
    assert terms("APP闪退了") == ["app", "闪退", "退了"]  # mixed scripts split at the boundary
    assert terms("ＣＳＶ export") == terms("csv export")  # full-width letters are folded


async def test_load_articles_reads_what_was_saved(db_url: str) -> None:
    db = open_database(db_url, durable=False)
    upgrade(db)
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    try:
        for article in ARTICLES[:3] + ARTICLES[-2:]:
            await db.write(lambda c, a=article: kb.save_article(c, a, now))
        loaded = await db.read(kb.load_articles)
    finally:
        await db.close()
    assert loaded == ARTICLES[:3] + ARTICLES[-2:]
    assert slugs(KbIndex.build(loaded), "我忘记了密码怎么办")[:1] == ["reset-password-zh"]
