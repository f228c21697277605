"""Reading pages the way a person does: by what they show, not by template internals."""

from __future__ import annotations

import re

from bs4 import BeautifulSoup

DURATION_UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400}


def body(response) -> bytes:
    """What the client receives, streamed or not."""
    return b"".join(response.streaming_content) if response.streaming else response.content


def parse(response_or_html) -> BeautifulSoup:
    html = response_or_html if isinstance(response_or_html, str) else response_or_html.content.decode()
    return BeautifulSoup(html, "html.parser")


def overview_rows(page: BeautifulSoup) -> dict[str, dict[str, str]]:
    """Queue name -> what its row shows, column by column (data-column), plus its link and health."""
    rows = {}
    for row in page.select("#overview-live tbody tr[data-queue]"):
        link = row.select_one("a.queue-link")
        cells = {cell["data-column"]: cell.get_text(" ", strip=True) for cell in row.select("[data-column]")}
        backlog = row.select_one("[data-column=backlog] span")
        health = row.select_one(".health")
        rows[link.get_text()] = {
            **cells,
            "href": link["href"],
            "backlog_title": backlog.get("title", ""),
            "health": health.get_text(),
            "health_reason": health["title"],
            "sparkline": row.select_one("td.spark").get_text(" ", strip=True) or "svg",
        }
    return rows


def totals(page: BeautifulSoup) -> dict[str, str]:
    return {cell["data-total"]: cell.get_text(" ", strip=True) for cell in page.select("[data-total]")}


def stat(page: BeautifulSoup, name: str) -> str:
    return page.select_one(f"[data-stat={name}]").get_text(" ", strip=True)


def number(text: str) -> int:
    return int(text.replace(",", "").replace("≈", "").strip())


def seconds(text: str) -> float:
    """ "1 min 5 s", "3 h 20 min", "45 s" -> seconds."""
    parts = re.findall(r"(\d+)\s*(s|min|h|d)\b", text)
    if not parts:
        raise ValueError(f"not a duration: {text!r}")
    return float(sum(int(amount) * DURATION_UNITS[unit] for amount, unit in parts))


def message_rows(page: BeautifulSoup) -> list[dict[str, str]]:
    return [
        {
            "msg_id": row["data-msg-id"],
            "source": row["data-source"],
            "state": row.select_one(".state").get_text(),
            "read_ct": row.select_one("[data-column=read_ct]").get_text(),
            "preview": row.select_one(".payload summary").get_text(strip=True),
        }
        for row in page.select("#messages-live tbody tr[data-msg-id]")
    ]


def pager_links(page: BeautifulSoup) -> dict[str, str]:
    """First / Previous / Next / Last -> href (the first pager of the list)."""
    pager = page.select_one("#messages-live .pager")
    return {link.get_text(strip=True).strip("←→ "): link["href"] for link in pager.select("a")} if pager else {}
