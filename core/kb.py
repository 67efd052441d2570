"""Knowledge-base articles: import from Markdown files or CSV."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select, update

from core.errors import InvalidInput, NotFound
from core.persistence.models import KbArticle, table_of
from core.persistence.records import insert_ignoring_duplicates

articles = table_of(KbArticle)

CSV_FIELDS = ("slug", "title", "body", "keywords", "language")
SLUG_CHARS = re.compile(r"[^a-z0-9\u4e00-\u9fff]+")


@dataclass(frozen=True, slots=True)
class Article:
    slug: str
    title: str
    body: str
    keywords: str = ""
    language: str = "en"


def slugify(text: str) -> str:
    return SLUG_CHARS.sub("-", text.lower()).strip("-")[:200] or "article"


def parse_markdown(text: str, name: str) -> Article:
    """A Markdown article: the first ``# `` heading is the title; an optional front block of
    ``key: value`` lines between ``---`` fences gives keywords, language and slug."""
    meta: dict[str, str] = {}
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end == -1:
            raise InvalidInput(f"{name}: front matter is not closed with ---", "front matter")
        for line in text[4:end].splitlines():
            key, sep, value = line.partition(":")
            if sep:
                meta[key.strip().lower()] = value.strip()
        text = text[end + 4 :].lstrip("\n")
    title = meta.get("title", "")
    body_lines = []
    for line in text.splitlines():
        if not title and line.startswith("# "):
            title = line[2:].strip()
            continue
        body_lines.append(line)
    if not title:
        raise InvalidInput(
            f"{name}: no title (a '# Title' line or 'title:' in front matter)", "title"
        )
    body = "\n".join(body_lines).strip()
    if not body:
        raise InvalidInput(f"{name}: the article has no body", "body")
    return Article(
        slug=slugify(meta.get("slug") or Path(name).stem),
        title=title,
        body=body,
        keywords=meta.get("keywords", ""),
        language=meta.get("language", "en"),
    )


def parse_csv(text: str, name: str) -> Iterator[Article]:
    reader = csv.DictReader(io.StringIO(text))
    missing = {"title", "body"} - set(reader.fieldnames or ())
    if missing:
        raise InvalidInput(
            f"{name}: missing CSV column(s): {', '.join(sorted(missing))}", "columns"
        )
    for line, row in enumerate(reader, start=2):
        title, body = (row.get("title") or "").strip(), (row.get("body") or "").strip()
        if not title or not body:
            raise InvalidInput(f"{name}:{line}: title and body must not be empty", "row")
        yield Article(
            slug=slugify(row.get("slug") or title),
            title=title,
            body=body,
            keywords=(row.get("keywords") or "").strip(),
            language=(row.get("language") or "en").strip() or "en",
        )


def read_articles(path: Path) -> list[Article]:
    """Articles from a .md/.markdown file, a .csv file, or a folder of them."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    found: list[Article] = []
    for file in files:
        suffix = file.suffix.lower()
        if suffix in (".md", ".markdown"):
            found.append(parse_markdown(file.read_text(encoding="utf-8"), str(file)))
        elif suffix == ".csv":
            found.extend(parse_csv(file.read_text(encoding="utf-8-sig"), str(file)))
        elif not path.is_dir():
            raise InvalidInput(f"{file}: not a Markdown or CSV file", "path")
    return found


def save_article(conn: Connection, article: Article, now: datetime) -> bool:
    """Insert or update by slug; True when the article is new."""
    values = {
        "title": article.title[:300],
        "body": article.body,
        "keywords": article.keywords[:1000],
        "language": article.language[:10],
        "updated_at": now,
    }
    if insert_ignoring_duplicates(conn, articles, {"slug": article.slug, **values}):
        return True
    conn.execute(update(articles).where(articles.c.slug == article.slug).values(**values))
    return False


def count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(articles)).scalar_one())


def load_articles(conn: Connection) -> list[Article]:
    """Every stored article (in insertion order), e.g. to build a ``kb_search.KbIndex``."""
    rows = conn.execute(
        select(
            articles.c.slug,
            articles.c.title,
            articles.c.body,
            articles.c.keywords,
            articles.c.language,
        ).order_by(articles.c.id)
    )
    return [Article(*row) for row in rows]


def article(conn: Connection, slug: str) -> Any:
    row = conn.execute(select(articles).where(articles.c.slug == slug)).first()
    if row is None:
        raise NotFound(f"no article {slug!r}")
    return row
