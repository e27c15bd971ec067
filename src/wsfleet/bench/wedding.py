"""Realistic wedding-platform messages for the compression figures (not random bytes).

What a channel of the platform carries: timeline updates (the day's schedule, item by
item), vendor notes (a florist's or caterer's free text), seating changes and guest
RSVPs, between about 0.2 and 8 KB of JSON each. Built from vocabularies of names,
places and phrases of the trade with a seeded generator, so every run (and every
server kind) gets the same messages.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from typing import Any

MIN_BYTES = 200
MAX_BYTES = 8192

VENDORS = [
    ("Rosewood Florals", "florist"),
    ("Golden Hour Photography", "photographer"),
    ("The Old Mill Kitchen", "caterer"),
    ("Velvet Strings Quartet", "band"),
    ("Sugar & Bloom Cakes", "baker"),
    ("Lakeside Limousines", "transport"),
    ("Harbour View Estate", "venue"),
    ("Bella Bridal Hair", "hair and makeup"),
]
EVENTS = [
    "guests arrive and are seated",
    "ceremony begins at the chapel",
    "exchange of vows and rings",
    "confetti exit and group photos on the lawn",
    "drinks reception on the terrace",
    "wedding breakfast is served",
    "speeches from the father of the bride and the best man",
    "cutting of the cake",
    "first dance",
    "evening guests arrive",
    "band starts the first set",
    "evening buffet opens",
    "sparkler send-off at the main entrance",
]
PHRASES = [
    "please confirm the final numbers with the coordinator",
    "the bride asked for peonies instead of garden roses in the bouquet",
    "two guests need a gluten-free menu and one a vegan menu",
    "load-in through the service entrance behind the kitchen",
    "the couple would like the golden hour portraits by the lake",
    "table plan changed: the Smith family moves from table 4 to table 6",
    "power for the band is on the left side of the stage",
    "if it rains, the ceremony moves to the orangery",
    "the cake stand stays with the venue after the reception",
    "parking for vendors is in the overflow car park",
    "please keep the aisle clear of petals until after the processional",
    "the photographer needs ten minutes with the bridal party before the ceremony",
]
FIRST = ["Emma", "Liam", "Olivia", "Noah", "Ava", "Lucas", "Mia", "Ethan", "Sophie", "James"]
LAST = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Davies", "Evans"]
STATUSES = ["confirmed", "pending", "changed", "done", "delayed"]


def _time(rng: random.Random) -> str:
    return f"{rng.randint(9, 23):02d}:{rng.choice((0, 15, 30, 45)):02d}"


def _person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _timeline(rng: random.Random, wedding: str, target: int) -> dict[str, Any]:
    msg: dict[str, Any] = {"kind": "timeline.update", "wedding": wedding, "items": []}
    while len(json.dumps(msg)) < target:
        vendor, role = rng.choice(VENDORS)
        msg["items"].append(
            {
                "at": _time(rng),
                "what": rng.choice(EVENTS),
                "owner": {"vendor": vendor, "role": role},
                "status": rng.choice(STATUSES),
                "note": rng.choice(PHRASES),
            }
        )
    return msg


def _vendor_note(rng: random.Random, wedding: str, target: int) -> dict[str, Any]:
    vendor, role = rng.choice(VENDORS)
    msg: dict[str, Any] = {
        "kind": "vendor.note",
        "wedding": wedding,
        "vendor": {"name": vendor, "role": role},
        "author": _person(rng),
        "text": "",
    }
    sentences: list[str] = []
    while len(json.dumps(msg)) < target:
        sentence = rng.choice(PHRASES)
        sentences.append(sentence[0].upper() + sentence[1:] + ".")
        msg["text"] = " ".join(sentences)
    return msg


def _seating(rng: random.Random, wedding: str, target: int) -> dict[str, Any]:
    msg: dict[str, Any] = {"kind": "seating.update", "wedding": wedding, "tables": []}
    while len(json.dumps(msg)) < target:
        table = len(msg["tables"]) + 1
        guests = [
            {"name": _person(rng), "meal": rng.choice(("beef", "fish", "vegan", "child"))}
            for _ in range(rng.randint(6, 10))
        ]
        msg["tables"].append({"table": table, "guests": guests})
    return msg


def _rsvp(rng: random.Random, wedding: str, target: int) -> dict[str, Any]:
    msg: dict[str, Any] = {"kind": "guest.rsvp", "wedding": wedding, "replies": []}
    while len(json.dumps(msg)) < target:
        msg["replies"].append(
            {
                "guest": _person(rng),
                "attending": rng.random() < 0.85,
                "plus_one": rng.random() < 0.3,
                "dietary": rng.choice(("", "vegetarian", "gluten-free", "nut allergy")),
            }
        )
    return msg


KINDS: list[Callable[[random.Random, str, int], dict[str, Any]]] = [
    _timeline,
    _vendor_note,
    _seating,
    _rsvp,
]


def wedding_messages(count: int, seed: int = 21) -> list[dict[str, Any]]:
    """`count` messages of every kind in turn, sizes log-uniform in 0.2-8 KB of JSON."""
    rng = random.Random(seed)
    out = []
    for index in range(count):
        target = int(math.exp(rng.uniform(math.log(MIN_BYTES), math.log(MAX_BYTES))))
        wedding = f"wedding-{rng.randint(1000, 9999)}"
        out.append(KINDS[index % len(KINDS)](rng, wedding, target))
    return out
