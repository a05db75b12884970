"""A reproducible demo data set: a universe and a few dozen realistic segments.

``generate(users, seed)`` draws, for every user ID in ``[0, users)``, a small
profile (country, age band, card tier, days since last activity, opt-ins,
risk flags, ...) from seeded numpy generators and returns one bitmap per
segment. The attributes are correlated the way real ones are (affluent users
hold higher card tiers and travel more, engaged users are active more
recently, new sign-ups are the highest, contiguous IDs and are more often
awaiting KYC), so expressions over them give plausible, non-trivial reaches.

Users are drawn in chunks of 2^20 IDs (16 shards), each chunk from its own
generator seeded with ``(seed, chunk)``: memory stays bounded by the output
bitmaps whatever ``users`` is, and the same seed always gives the same data.
``load(segs, users, seed)`` writes everything with ``Segments.replace``.

This module imports only numpy, pyroaring and ``segments``, so benchmarks can
reuse it.
"""

from __future__ import annotations

import array
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pyroaring import BitMap

from .client import Segments

DEFAULT_USERS = 10_000_000
DEFAULT_SEED = 20240501
CHUNK_BITS = 20
CHUNK = 1 << CHUNK_BITS

#: (country code, share of users)
COUNTRIES: tuple[tuple[str, float], ...] = (
    ("us", 0.22), ("gb", 0.10), ("de", 0.10), ("fr", 0.09), ("br", 0.08), ("in", 0.08),
    ("es", 0.07), ("it", 0.06), ("mx", 0.06), ("nl", 0.05), ("jp", 0.05), ("au", 0.04),
)  # fmt: skip
AGE_BANDS: tuple[tuple[str, float], ...] = (
    ("age_18_24", 0.14), ("age_25_34", 0.27), ("age_35_49", 0.30),
    ("age_50_64", 0.19), ("age_65_plus", 0.10),
)  # fmt: skip
#: card tiers by affluence score thresholds (no card below the first one)
CARD_TIERS: tuple[tuple[str, float], ...] = (
    ("card_classic", -0.55),
    ("card_gold", 0.65),
    ("card_platinum", 1.35),
    ("card_black", 2.05),
)
ACTIVITY_WINDOWS: tuple[int, ...] = (1, 7, 30, 90)

Report = Callable[[str], None]


@dataclass(frozen=True)
class DemoSegment:
    name: str
    description: str


def segment_names(universe: str = "all") -> list[str]:
    """Every segment the demo data set creates, universe first."""
    return [universe, *(s.name for s in _catalog())]


def _catalog() -> list[DemoSegment]:
    out = [DemoSegment(f"country_{code}", f"lives in {code.upper()}") for code, _ in COUNTRIES]
    out += [DemoSegment(name, name.replace("_", " ")) for name, _ in AGE_BANDS]
    out += [DemoSegment(name, f"holds a {name[5:]} card") for name, _ in CARD_TIERS]
    out += [DemoSegment(f"active_{d}d", f"active in the last {d} days") for d in ACTIVITY_WINDOWS]
    out += [
        DemoSegment("churned", "inactive for over 180 days"),
        DemoSegment("signup_7d", "signed up in the last 7 days"),
        DemoSegment("signup_30d", "signed up in the last 30 days"),
        DemoSegment("email_optin", "accepts marketing e-mail"),
        DemoSegment("push_optin", "accepts push notifications"),
        DemoSegment("sms_optin", "accepts marketing SMS"),
        DemoSegment("app_installed", "has the mobile app"),
        DemoSegment("contactless_user", "paid contactless in the last 90 days"),
        DemoSegment("online_shopper", "paid online in the last 90 days"),
        DemoSegment("travel_interest", "paid abroad or booked travel this year"),
        DemoSegment("crypto_interest", "bought crypto this year"),
        DemoSegment("has_savings", "holds a savings account"),
        DemoSegment("has_loan", "holds a personal loan"),
        DemoSegment("has_mortgage", "holds a mortgage"),
        DemoSegment("high_value", "top customers by spend"),
        DemoSegment("risk_high", "high fraud risk score"),
        DemoSegment("risk_chargeback_90d", "filed a chargeback in the last 90 days"),
        DemoSegment("kyc_pending", "identity verification not complete"),
        DemoSegment("fraud_blocked", "blocked for confirmed fraud"),
        DemoSegment("aml_watchlist", "on the anti-money-laundering watch list"),
    ]
    return out


def _profile(rng: np.random.Generator, start: int, stop: int, users: int) -> dict[str, np.ndarray]:
    """Boolean membership masks of users ``[start, stop)`` for every segment but the universe."""
    n = stop - start
    f32 = np.float32

    def uniform() -> np.ndarray:
        return rng.random(n, dtype=f32)

    affluence = rng.standard_normal(n, dtype=f32)
    engagement = rng.standard_normal(n, dtype=f32)
    masks: dict[str, np.ndarray] = {}

    country = np.searchsorted(np.cumsum([w for _, w in COUNTRIES]), uniform() * sum(w for _, w in COUNTRIES))
    for i, (code, _) in enumerate(COUNTRIES):
        masks[f"country_{code}"] = country == i
    age = np.searchsorted(np.cumsum([w for _, w in AGE_BANDS]), uniform() * sum(w for _, w in AGE_BANDS))
    for i, (name, _) in enumerate(AGE_BANDS):
        masks[name] = age == i
    older = age >= 2

    score = affluence + 0.35 * older + 0.3 * rng.standard_normal(n, dtype=f32)
    tier = np.searchsorted(np.array([t for _, t in CARD_TIERS], dtype=f32), score, side="right")
    for i, (name, _) in enumerate(CARD_TIERS):
        masks[name] = tier == i + 1

    # Users are numbered in sign-up order: the newest are the highest, contiguous IDs.
    ids = np.arange(start, stop, dtype=np.int64)
    signup_age_days = (users - 1 - ids) * (1500.0 / max(users, 1))
    masks["signup_7d"] = signup_age_days < 7
    masks["signup_30d"] = signup_age_days < 30
    mean_gap = np.exp(3.3 - 1.8 * engagement)  # days between visits, log-normal across users
    days_idle = np.minimum(rng.exponential(1.0, n).astype(f32) * mean_gap, signup_age_days + uniform())
    for d in ACTIVITY_WINDOWS:
        masks[f"active_{d}d"] = days_idle < d
    masks["churned"] = days_idle > 180

    active = days_idle < 30
    masks["email_optin"] = uniform() < 0.55
    masks["push_optin"] = uniform() < np.where(active, 0.55, 0.2)
    masks["sms_optin"] = uniform() < 0.2
    app = uniform() < np.where(age <= 1, 0.8, 0.5)
    masks["app_installed"] = app
    masks["contactless_user"] = (days_idle < 90) & (uniform() < 0.7)
    masks["online_shopper"] = (days_idle < 90) & (uniform() < np.where(age <= 2, 0.75, 0.45))
    masks["travel_interest"] = uniform() < 1 / (1 + np.exp(-(affluence - 1.2)))
    masks["crypto_interest"] = uniform() < np.where(age <= 1, 0.12, 0.03)
    masks["has_savings"] = uniform() < 1 / (1 + np.exp(-(affluence + 0.2)))
    masks["has_loan"] = uniform() < np.where(older, 0.18, 0.1)
    masks["has_mortgage"] = older & (uniform() < 1 / (1 + np.exp(-(affluence - 0.3))))
    masks["high_value"] = (affluence + engagement) > 2.33

    risk = rng.standard_normal(n, dtype=f32) - 0.5 * (tier > 1) + 1.2 * (signup_age_days < 30)
    masks["risk_high"] = risk > 2.3
    masks["risk_chargeback_90d"] = (uniform() < 0.004) | (masks["risk_high"] & (uniform() < 0.1))
    masks["kyc_pending"] = uniform() < np.where(signup_age_days < 30, 0.35, 0.01)
    masks["fraud_blocked"] = masks["risk_high"] & (uniform() < 0.06)
    masks["aml_watchlist"] = uniform() < 0.0002
    return masks


def generate(
    users: int = DEFAULT_USERS,
    seed: int = DEFAULT_SEED,
    *,
    universe: str = "all",
    report: Report | None = None,
) -> dict[str, BitMap]:
    """The demo segments over user IDs ``[0, users)``, universe first."""
    if not 0 < users <= 1 << 32:
        raise ValueError(f"users must be between 1 and 2**32, got {users}")
    everyone = BitMap()
    everyone.add_range(0, users)
    out: dict[str, BitMap] = {universe: everyone}
    out.update({s.name: BitMap() for s in _catalog()})
    chunks = (users + CHUNK - 1) // CHUNK
    for chunk in range(chunks):
        start = chunk * CHUNK
        stop = min(users, start + CHUNK)
        rng = np.random.default_rng([seed, chunk])
        for name, mask in _profile(rng, start, stop, users).items():
            members = np.flatnonzero(mask)
            if members.size:
                out[name].update(array.array("I", (members + start).astype(np.uint32).tobytes()))
        if report is not None and (chunk + 1 == chunks or (chunk + 1) % max(1, chunks // 8) == 0):
            report(f"generated {stop:,} of {users:,} users")
    for bm in out.values():
        bm.run_optimize()
        bm.shrink_to_fit()
    return out


def load(
    segs: Segments,
    users: int = DEFAULT_USERS,
    seed: int = DEFAULT_SEED,
    *,
    report: Report | None = None,
) -> dict[str, int]:
    """Generate the demo data set and write it with ``Segments.replace``; returns the sizes."""
    started = time.monotonic()
    data = generate(users, seed, universe=segs.universe, report=report)
    sizes: dict[str, int] = {}
    for i, (name, members) in enumerate(data.items(), 1):
        sizes[name] = segs.replace(name, members).cardinality
        if report is not None and (i % 10 == 0 or i == len(data)):
            report(f"wrote {i} of {len(data)} segments")
    if report is not None:
        report(
            f"demo data ready: {len(data)} segments over {users:,} users in {time.monotonic() - started:.1f}s"
        )
    return sizes


__all__ = ["DEFAULT_SEED", "DEFAULT_USERS", "DemoSegment", "generate", "load", "segment_names"]
