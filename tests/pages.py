"""Reading pages the way a person does: by what they show, not by template internals."""
from __future__ import annotations

from bs4 import BeautifulSoup


def parse(response_or_html) -> BeautifulSoup:
    html = response_or_html if isinstance(response_or_html, str) else response_or_html.content.decode()
    return BeautifulSoup(html, "html.parser")


def overview_rows(page: BeautifulSoup) -> dict[str, dict[str, str]]:
    """Queue name -> {"backlog": shown text, "href": link, "backlog_title": hover text}."""
    rows = {}
    for row in page.select("#queue-table tbody tr"):
        link = row.select_one("a.queue-link")
        if link is None:
            continue
        backlog = row.select_one("[data-column=backlog] span")
        rows[link.get_text()] = {
            "href": link["href"],
            "backlog": backlog.get_text(),
            "backlog_title": backlog.get("title", ""),
        }
    return rows


def stat(page: BeautifulSoup, name: str) -> str:
    return page.select_one(f"[data-stat={name}]").get_text(strip=True)


def number(text: str) -> int:
    return int(text.replace(",", "").replace("≈", "").strip())
