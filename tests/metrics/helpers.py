"""Scraping ``/metrics`` over HTTP and reading samples, for the metrics tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

APP = "tests.metrics.app"


@dataclass
class Scrape:
    """One scrape: family names and every sample, parsed by prometheus_client."""

    families: dict[str, str]  # family name -> type
    samples: list[tuple[str, dict[str, str], float]]

    def value(self, name: str, **labels: str) -> float:
        """The sum of samples named ``name`` whose labels include ``labels`` (0 if none)."""
        return sum(
            v for n, lab, v in self.samples
            if n == name and all(lab.get(k) == want for k, want in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            n == name and all(lab.get(k) == want for k, want in labels.items())
            for n, lab, _ in self.samples
        )


async def scrape(http: aiohttp.ClientSession, port: int) -> Scrape:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    families: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for s in family.samples:
            samples.append((s.name, dict(s.labels), float(s.value)))
    return Scrape(families, samples)


async def call(http: aiohttp.ClientSession, method: str, url: str) -> tuple[int, Any]:
    async with http.request(method, url) as resp:
        return resp.status, await resp.json(content_type=None)
