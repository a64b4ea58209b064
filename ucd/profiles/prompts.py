"""Versioned prompt templates: {movies, products, generic} x {structured, long} (docs/design.md, "Profiles").

The version string is stored with every profile; change ``TEMPLATE_VERSION`` whenever the
wording changes, so old profiles are recognisably different (the job's fingerprint also
hashes the wording, so an unversioned edit cannot silently mix outputs).
"""

from __future__ import annotations

from dataclasses import dataclass

from ucd.schema import fingerprint

TEMPLATE_VERSION = "v1"

SYSTEM = (
    "You write concise, factual user profiles for a recommender system. "
    "Base every statement on the history you are given."
)


@dataclass(frozen=True)
class Domain:
    item: str  # "movie"
    items: str  # "movies"
    signal: str  # how the per-item signal is introduced
    taste: str  # what "preferences" are made of
    behaviour: str
    long_focus: str


DOMAINS: dict[str, Domain] = {
    "movies": Domain(
        item="movie",
        items="movies",
        signal="the user's rating out of 5",
        taste=(
            "favourite genres with approximate shares (e.g. Drama ~40%), preferred eras "
            "and themes, and what they dislike"
        ),
        behaviour="how they rate (average rating, strict or generous) and how varied their taste is",
        long_focus="genres, eras and themes",
    ),
    "products": Domain(
        item="product",
        items="products",
        signal="the user's rating out of 5 when known",
        taste=("top categories with approximate shares, preferred product features, brands and price range"),
        behaviour="how they buy and rate (loyal to brands or exploring, price sensitivity)",
        long_focus="categories, brands, features and price range",
    ),
    "generic": Domain(
        item="item",
        items="items",
        signal="the user's rating when known",
        taste="the kinds of items they prefer, with approximate shares",
        behaviour="how they interact and rate and how varied their choices are",
        long_focus="kinds of items and their attributes",
    ),
}

STYLES = ("structured", "long")


def _format_block(d: Domain, style: str) -> str:
    if style == "structured":
        return (
            "Write the profile with exactly these three sections:\n"
            f"Preferences: {d.taste}.\n"
            f"Behavioral Insights: {d.behaviour}.\n"
            "Engagement Trends: how their interests changed from the older to the newer entries.\n"
            "Use two to four short bullet points per section, give numbers where possible, "
            f"and do not list the {d.items} one by one."
        )
    return (
        "Write five short paragraphs about this user: (1) their overall taste, "
        f"(2) their favourite {d.long_focus}, (3) what they avoid or rate low, "
        "(4) how they behave (ratings, variety), (5) how their interests changed over time. "
        f"Plain prose, no lists, and do not list the {d.items} one by one."
    )


@dataclass(frozen=True)
class Templates:
    domain: str
    style: str
    facts: bool = True  # a block of computed counts before the history (facts.py)

    @property
    def d(self) -> Domain:
        return DOMAINS[self.domain]

    @property
    def version(self) -> str:
        return f"{self.domain}-{self.style}-{TEMPLATE_VERSION}" + ("" if self.facts else "-nofacts")

    def digest(self) -> str:
        """Hash of the wording, part of the job fingerprint."""
        probe = [
            self.profile("<H>", 1, 1, "<F>"),
            self.profile("<H>", 2, 3, "<F>"),
            self.aggregate(["<P>"]),
            self.update("<P>", "<H>", "<F>"),
        ]
        return fingerprint(SYSTEM, probe, self.facts)

    def _entries(self, history: str, facts: str, newer: bool = False) -> str:
        which = "newer " if newer else ""
        block = ""
        if self.facts and facts:
            block = f"Counts computed from these {which}{self.d.items}:\n{facts}\n\n"
        return (
            f"{block}The {which}{self.d.items}, oldest first; each line gives {self.d.signal} "
            f"(when there is one), then the {self.d.item}:\n{history}"
        )

    def profile(self, history: str, part: int = 1, parts: int = 1, facts: str = "") -> str:
        where = "" if parts == 1 else f" (part {part} of {parts} of the history, oldest part first)"
        return (
            f"Here is a user's history of {self.d.items}{where}.\n\n"
            f"{self._entries(history, facts)}\n\n{_format_block(self.d, self.style)}"
        )

    def aggregate(self, partials: list[str]) -> str:
        blocks = "\n\n".join(f"Profile {i + 1}:\n{p.strip()}" for i, p in enumerate(partials))
        return (
            f"Here are {len(partials)} partial profiles of the same user, each written from a "
            "different period of their history, oldest first.\n\n"
            f"{blocks}\n\nMerge them into one profile of the whole history; when they disagree, "
            f"give more weight to the newer periods. {_format_block(self.d, self.style)}"
        )

    def update(self, current: str, history: str, facts: str = "") -> str:
        return (
            f"Here is a user's current profile:\n\n{current.strip()}\n\n"
            f"{self._entries(history, facts, newer=True)}\n\n"
            "Rewrite the profile so it covers both; give more weight to the newer entries. "
            f"{_format_block(self.d, self.style)}"
        )


def templates(domain: str, style: str, facts: bool = True) -> Templates:
    if domain not in DOMAINS:
        raise ValueError(f"unknown prompt domain '{domain}' (one of {sorted(DOMAINS)})")
    if style not in STYLES:
        raise ValueError(f"unknown prompt style '{style}' (one of {STYLES})")
    return Templates(domain, style, facts)


def messages(user_text: str, system_role: bool = True) -> list[dict[str, str]]:
    if system_role:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user_text}]
    return [{"role": "user", "content": f"{SYSTEM}\n\n{user_text}"}]
