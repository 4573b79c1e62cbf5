"""Deterministic synthetic dataset group in the Amazon Personalize format.

The generator first draws a *world* (users, items and their latent ground truth:
category interests, item quality, creation times, ...) and then simulates
browsing sessions on top of it.  Everything is derived from :class:`DemoSpec`
alone, through independent random streams (``numpy.random.default_rng`` seeded
with ``[seed, stream]``), so the same spec always yields byte-identical files
and :func:`build_world` can rebuild the ground truth without regenerating the
interactions.

Behaviour that the later recipes and the exploration simulation rely on:

* long-tail item popularity (log-normal item quality) and heavy-tailed user
  activity (log-normal, premium members more active); every user has at least
  three interactions;
* users are interested in 1-3 categories (Dirichlet over a top-k subset, the
  prior depending on the age group) and, for about a third of them, drift from
  an earlier profile towards :attr:`DemoWorld.user_interests` (the profile at
  the end of the timeline, which is what :meth:`DemoWorld.affinity` uses);
* activity is organised in sessions: events of a session are minutes apart,
  sessions of a user are (typically) days apart, a session mostly stays in one
  category and often moves to an item *related* to the previous one
  (neighbours on a latent per-category axis), so the next item is predictable
  from the previous ones;
* items are created along the timeline (about 60 % before ``start``); no event
  and no impression ever refers to an item created after the event time.

Everything is vectorised with numpy; the only Python loops run over positions
inside a session (a few dozen at most) and over impression columns.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .locations import Location, as_location

__all__ = [
    "AGE_GROUPS",
    "CATEGORY_NAMES",
    "DEVICES",
    "EVENT_TYPES",
    "MEMBERSHIPS",
    "DemoSpec",
    "DemoWorld",
    "build_world",
    "category_names",
    "generate",
    "interactions_schema",
    "items_schema",
    "users_schema",
]

CATEGORY_NAMES: tuple[str, ...] = (
    "Action",
    "Comedy",
    "Drama",
    "Horror",
    "Romance",
    "SciFi",
    "Documentary",
    "Thriller",
    "Animation",
    "Family",
    "Fantasy",
    "Crime",
    "Music",
    "Sports",
    "Mystery",
    "Adventure",
    "History",
    "Western",
    "War",
    "Biography",
)
AGE_GROUPS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
_AGE_SHARES = np.array([0.16, 0.27, 0.22, 0.16, 0.11, 0.08])
MEMBERSHIPS: tuple[str, ...] = ("free", "premium")
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tv")
_DEVICE_SHARES = np.array([0.55, 0.30, 0.15])
EVENT_TYPES: tuple[str, ...] = ("click", "watch", "purchase")
# P(event type | device); overall mix is about 70 / 25 / 5.
_TYPE_BY_DEVICE = np.array(
    [
        [0.72, 0.22, 0.06],  # mobile
        [0.74, 0.20, 0.06],  # desktop
        [0.55, 0.42, 0.03],  # tv
    ]
)

_DAY = 86_400
_PRESTART_SHARE = 0.6  # share of items created before spec.start
_PRESTART_SPAN = 3 * 365 * _DAY
_SESSION_BREAK_P = 0.22  # mean session length ~4.5 events
_MIN_SESSION_GAP = 1_800  # at least 30 min between two sessions of a user
_DRIFTER_SHARE = 0.35  # users whose interests drift over the timeline
_P_WANDER = 0.12  # in-session event outside the session category
_P_REPEAT = 0.05  # re-interact with the previous item
_P_FOLLOW = 0.45  # move to an item related to the previous one
_NEIGHBOUR_OFFSETS = np.array([-2, -1, 1, 2])
_NEIGHBOUR_WEIGHTS = np.array([1.0, 2.0, 2.0, 1.0])
_IMPRESSION_MIN, _IMPRESSION_MAX = 3, 10
_IMPRESSION_RANDOM_COLS = 9  # candidate slots besides the interacted item
_CHUNK = 500_000  # events per impression-building chunk
_BATCH_USERS = 200

# Independent random streams, so that e.g. the world does not depend on the
# number of interactions.
_S_WORLD, _S_EVENTS, _S_IMPRESSIONS, _S_BATCH = 1, 2, 3, 4


@dataclass(frozen=True)
class DemoSpec:
    users: int = 2000
    items: int = 1000
    interactions: int = 60_000
    seed: int = 42
    categories: int = 12
    start: int = 1_672_531_200  # 2023-01-01 UTC, epoch seconds
    days: int = 180  # length of the timeline

    @property
    def end(self) -> int:
        return self.start + self.days * _DAY

    def validate(self) -> None:
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.users < 1:
            raise ValueError("users must be >= 1")
        if self.categories < 1:
            raise ValueError("categories must be >= 1")
        if self.items < max(3, self.categories):
            raise ValueError("items must be >= max(3, categories)")
        if self.interactions < 3 * self.users:
            raise ValueError("interactions must be >= 3 * users (every user has >= 3 events)")
        if self.days < 1:
            raise ValueError("days must be >= 1")


def category_names(n: int) -> tuple[str, ...]:
    """Names of the first ``n`` categories (``Genre21``... beyond the built-in list)."""
    base = CATEGORY_NAMES[:n]
    return base + tuple(f"Genre{i + 1}" for i in range(len(base), n))


def _id_strings(prefix: str, n: int) -> np.ndarray:
    width = max(6, len(str(n)))
    digits = np.strings.zfill(np.arange(1, n + 1).astype(np.str_), width)
    return np.strings.add(prefix, digits)


@dataclass(frozen=True, eq=False)
class DemoWorld:
    """Ground truth of the synthetic world, rebuilt from the spec by :func:`build_world`."""

    spec: DemoSpec
    user_ids: np.ndarray  # str, "u000001", ...
    item_ids: np.ndarray  # str, "i000001", ...
    item_category: np.ndarray  # int64 primary category per item
    item_created: np.ndarray  # int64 epoch seconds
    item_quality: np.ndarray  # float64 > 0, log-normal intrinsic appeal
    user_interests: np.ndarray  # float64 [users, categories], rows sum to 1 (end of timeline)
    # -- extra ground truth used by the simulation and the metadata files --
    category_share: np.ndarray  # float64 [categories], global prior of each category
    item_secondary: np.ndarray  # int64 [items, 2], secondary categories, -1 = none
    item_price: np.ndarray  # float64
    item_latent: np.ndarray  # float64 in [0, 1), position on the category's "style" axis
    item_appeal: np.ndarray  # float64 in (0, 1], quality percentile
    user_interests_early: np.ndarray  # float64 [users, categories], profile at the start
    user_age_group: np.ndarray  # int64 index into AGE_GROUPS
    user_premium: np.ndarray  # bool
    user_activity: np.ndarray  # float64 > 0, relative activity weight
    user_device: np.ndarray  # int64 index into DEVICES, preferred device
    user_first_seen: np.ndarray  # int64 epoch seconds, earliest possible activity

    @property
    def category_names(self) -> tuple[str, ...]:
        return category_names(self.spec.categories)

    def affinity(self, user_index: np.ndarray, item_index: np.ndarray) -> np.ndarray:
        """Ground-truth probability in [0, 1] that a user clicks a recommended item.

        Grows with the user's current interest in the item's category (relative
        to their favourite category) and with the item's quality percentile;
        ranges from 0.02 (off-interest, poor item) to 0.75 (favourite category,
        best item).  Inputs broadcast like numpy fancy indexing, e.g.
        ``world.affinity(users[:, None], items[None, :])``.
        """
        u = np.asarray(user_index)
        i = np.asarray(item_index)
        interest = self.user_interests[u, self.item_category[i]]
        rel = interest / self.user_interests.max(axis=1)[u]
        p = 0.02 + 0.73 * rel**1.5 * (0.25 + 0.75 * self.item_appeal[i])
        return np.clip(p, 0.0, 1.0)


def _rng(spec: DemoSpec, stream: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, stream])


def _interest_profiles(rng: np.random.Generator, prior: np.ndarray) -> np.ndarray:
    """Rows concentrated on 1-3 categories drawn (Gumbel top-k) from ``prior`` rows."""
    n, c = prior.shape
    k = np.minimum(rng.choice(np.array([1, 2, 3]), size=n, p=[0.35, 0.40, 0.25]), c)
    keys = np.log(prior) + rng.gumbel(size=(n, c))
    thresh = -np.sort(-keys, axis=1)[np.arange(n), k - 1]
    mask = keys >= thresh[:, None]
    g = rng.gamma(1.0, size=(n, c)) * mask + mask * 1e-9
    focused = g / g.sum(axis=1, keepdims=True)
    background = prior / prior.sum(axis=1, keepdims=True)
    out = 0.94 * focused + 0.06 * background
    return out / out.sum(axis=1, keepdims=True)


def build_world(spec: DemoSpec) -> DemoWorld:
    """Draw the ground truth (users, items, interests) from ``spec`` alone."""
    spec.validate()
    rng = _rng(spec, _S_WORLD)
    n_users, n_items, n_cat = spec.users, spec.items, spec.categories

    category_share = rng.lognormal(0.0, 0.5, n_cat)
    category_share /= category_share.sum()

    # Items: the first `categories` items cover every category once, the rest
    # follow the category prior.  Those anchors (and at least three items) exist
    # before `start`, so every category always has an available item.
    item_category = np.concatenate(
        [
            np.arange(n_cat),
            rng.choice(n_cat, size=n_items - n_cat, p=category_share),
        ]
    ).astype(np.int64)
    prestart = rng.random(n_items) < _PRESTART_SHARE
    prestart[: max(n_cat, 3)] = True
    before = spec.start - rng.integers(1, _PRESTART_SPAN, size=n_items)
    after = spec.start + rng.integers(0, spec.days * _DAY, size=n_items)
    item_created = np.where(prestart, before, after).astype(np.int64)
    item_quality = rng.lognormal(0.0, 1.2, n_items)
    item_appeal = (np.argsort(np.argsort(item_quality, kind="stable"), kind="stable") + 1.0) / n_items
    item_latent = rng.random(n_items)
    base_price = rng.lognormal(np.log(12.0), 0.4, n_cat)
    raw_price = base_price[item_category] * rng.lognormal(0.0, 0.5, n_items)
    item_price = np.floor(np.maximum(raw_price, 1.0)) - 0.01
    item_price = np.maximum(item_price, 0.99).round(2)

    item_secondary = np.full((n_items, 2), -1, dtype=np.int64)
    if n_cat > 1:
        n_sec = np.minimum(rng.choice(3, size=n_items, p=[0.55, 0.35, 0.10]), n_cat - 1)
        off1 = rng.integers(1, n_cat, size=n_items)
        item_secondary[:, 0] = np.where(n_sec >= 1, (item_category + off1) % n_cat, -1)
        if n_cat > 2:
            off2 = rng.integers(1, n_cat - 1, size=n_items)
            off2 = off2 + (off2 >= off1)
            item_secondary[:, 1] = np.where(n_sec >= 2, (item_category + off2) % n_cat, -1)

    # Users.
    user_age_group = rng.choice(len(AGE_GROUPS), size=n_users, p=_AGE_SHARES).astype(np.int64)
    premium_p = np.array([0.15, 0.30, 0.32, 0.25, 0.20, 0.15])[user_age_group]
    user_premium = rng.random(n_users) < premium_p
    age_taste = rng.lognormal(0.0, 0.7, (len(AGE_GROUPS), n_cat))
    prior = category_share[None, :] * age_taste[user_age_group]
    user_interests = _interest_profiles(rng, prior)
    earlier = _interest_profiles(rng, prior)
    drifter = rng.random(n_users) < _DRIFTER_SHARE
    user_interests_early = np.where(drifter[:, None], earlier, user_interests)
    user_activity = rng.lognormal(0.0, 1.0, n_users) * np.where(user_premium, 1.8, 1.0)
    user_device = rng.choice(len(DEVICES), size=n_users, p=_DEVICE_SHARES).astype(np.int64)
    user_first_seen = spec.start + np.floor(spec.days * _DAY * 0.9 * rng.beta(0.9, 2.2, n_users)).astype(np.int64)

    return DemoWorld(
        spec=spec,
        user_ids=_id_strings("u", n_users),
        item_ids=_id_strings("i", n_items),
        item_category=item_category,
        item_created=item_created,
        item_quality=item_quality,
        user_interests=user_interests,
        category_share=category_share,
        item_secondary=item_secondary,
        item_price=item_price,
        item_latent=item_latent,
        item_appeal=item_appeal,
        user_interests_early=user_interests_early,
        user_age_group=user_age_group,
        user_premium=user_premium,
        user_activity=user_activity,
        user_device=user_device,
        user_first_seen=user_first_seen,
    )


class _ItemSampler:
    """Quality-weighted sampling of an item of a category available at time t.

    Items are sorted by (category, creation time); the items of category c
    created at or before t form a contiguous prefix of c's block, found with one
    ``searchsorted`` on a combined key, and an item is drawn by inverse CDF on
    the global cumulative quality weights.  :meth:`sample_hourly` uses the
    prefixes as of the start of the event's hour (a lookup table instead of a
    search): slightly conservative, much cheaper for the impression slots.
    """

    def __init__(self, world: DemoWorld):
        spec = world.spec
        cat, created, quality = world.item_category, world.item_created, world.item_quality
        self.cmin = int(created.min())
        self.order = np.lexsort((created, cat))
        self.key = cat[self.order] * (1 << 40) + (created[self.order] - self.cmin)
        self.cum = np.concatenate([[0.0], np.cumsum(quality[self.order])])
        self.cat_start = np.searchsorted(cat[self.order], np.arange(spec.categories))
        self.start = spec.start
        hours = spec.start + 3600 * np.arange(spec.days * 24 + 1)
        self.hour_end = np.searchsorted(
            self.key,
            np.arange(spec.categories)[None, :] * (1 << 40) + (hours[:, None] - self.cmin),
            side="right",
        )

    def _draw(self, cats: np.ndarray, hi_idx: np.ndarray, u: np.ndarray) -> np.ndarray:
        lo_idx = self.cat_start[cats]
        lo, hi = self.cum[lo_idx], self.cum[hi_idx]
        pos = np.searchsorted(self.cum, lo + u * (hi - lo), side="right") - 1
        pos = np.maximum(np.minimum(pos, hi_idx - 1), lo_idx)
        return self.order[pos]

    def sample(self, cats: np.ndarray, t: np.ndarray, u: np.ndarray) -> np.ndarray:
        hi_idx = np.searchsorted(self.key, cats * (1 << 40) + (t - self.cmin), side="right")
        return self._draw(cats, hi_idx, u)

    def sample_hourly(self, cats: np.ndarray, t: np.ndarray, u: np.ndarray) -> np.ndarray:
        hour = np.clip((t - self.start) // 3600, 0, self.hour_end.shape[0] - 1)
        return self._draw(cats, self.hour_end[hour, cats], u)


def _sample_rows(cum_rows: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Categorical draw from row ``rows`` of a matrix of row-wise CDFs (last column 1)."""
    n_rows, n_col = cum_rows.shape
    flat = (cum_rows + np.arange(n_rows)[:, None]).ravel()
    idx = np.searchsorted(flat, rows + u, side="right")
    return np.clip(idx - rows * n_col, 0, n_col - 1)


def _group_cumsum_exclusive(x: np.ndarray, group_first: np.ndarray, group_len: np.ndarray) -> np.ndarray:
    """Exclusive cumulative sum of ``x`` restarted at every contiguous group."""
    excl = np.cumsum(x) - x
    return excl - np.repeat(excl[group_first], group_len)


@dataclass(frozen=True)
class _Sessions:
    """Session structure of the event log; events are in (user, session, position) order."""

    user: np.ndarray  # per event: user index
    session: np.ndarray  # per event: session index
    pos: np.ndarray  # per event: position in its session
    first: np.ndarray  # per session: index of its first event
    length: np.ndarray  # per session: number of events
    session_user: np.ndarray  # per session: user index


@dataclass(frozen=True)
class _DriftingInterests:
    """Category draws for sessions whose users drift from their early interest profile
    (:attr:`DemoWorld.user_interests_early`) to the current one."""

    cum_profiles: np.ndarray  # row-wise CDFs: the current profiles, then the early ones
    early_w: np.ndarray  # per session: probability of drawing from the early profile
    session_user: np.ndarray  # per session: user index
    n_users: int

    def draw(self, rng: np.random.Generator, s: np.ndarray) -> np.ndarray:
        """One category per session in ``s``: two draws each, which profile, then the category."""
        row = self.session_user[s] + self.n_users * (rng.random(s.size) < self.early_w[s])
        return _sample_rows(self.cum_profiles, row, rng.random(s.size))


def _simulate(world: DemoWorld) -> dict[str, np.ndarray]:
    """Simulate the event log; arrays are in (user, session, position) order.

    Every draw comes from the one events stream, in a fixed order: sessions,
    devices, event types, in-session gaps, session placement, session
    categories, items, event values.  The generated files depend on that
    order: keep it.
    """
    spec = world.spec
    rng = _rng(spec, _S_EVENTS)
    sessions = _draw_sessions(world, rng)
    device = _draw_devices(world, rng, sessions)
    etype = _draw_event_types(rng, device)
    offset, duration = _session_offsets(rng, sessions, etype)
    session_start = _session_starts(world, rng, sessions, duration)
    ts = np.minimum(session_start[sessions.session] + offset, spec.end - 1)
    interests = _drifting_interests(world, sessions, session_start)
    session_cat = interests.draw(rng, np.arange(sessions.first.size))
    item = _draw_items(world, rng, sessions, ts, session_cat, interests)
    value = _event_values(world, rng, sessions.user, item, etype)
    return {"user": sessions.user, "item": item, "ts": ts, "etype": etype, "value": value, "device": device}


def _draw_sessions(world: DemoWorld, rng: np.random.Generator) -> _Sessions:
    """Events per user (heavy-tailed activity, >= 3 per user, exactly ``interactions`` in
    total), cut into sessions."""
    spec = world.spec
    n_users, n_events = spec.users, spec.interactions
    p = world.user_activity / world.user_activity.sum()
    counts = 3 + rng.multinomial(n_events - 3 * n_users, p)
    user = np.repeat(np.arange(n_users), counts)
    user_first_event = np.cumsum(counts) - counts
    pos_in_user = np.arange(n_events) - np.repeat(user_first_event, counts)
    brk = (pos_in_user == 0) | (rng.random(n_events) < _SESSION_BREAK_P)
    first = np.flatnonzero(brk)
    length = np.diff(np.append(first, n_events))
    return _Sessions(
        user=user,
        session=np.cumsum(brk) - 1,
        pos=np.arange(n_events) - np.repeat(first, length),
        first=first,
        length=length,
        session_user=user[first],
    )


def _draw_devices(world: DemoWorld, rng: np.random.Generator, sessions: _Sessions) -> np.ndarray:
    """Device per event, drawn per session: usually the user's preferred one."""
    n_sessions = sessions.first.size
    other_device = rng.choice(len(DEVICES), size=n_sessions, p=_DEVICE_SHARES)
    preferred = world.user_device[sessions.session_user]
    session_device = np.where(rng.random(n_sessions) < 0.8, preferred, other_device)
    return session_device[sessions.session]


def _draw_event_types(rng: np.random.Generator, device: np.ndarray) -> np.ndarray:
    """Event type per event (index into EVENT_TYPES); depends on the device."""
    u = rng.random(device.size)
    probs = _TYPE_BY_DEVICE[device]
    return (u >= probs[:, 0]).astype(np.int64) + (u >= probs[:, 0] + probs[:, 1])


def _session_offsets(rng: np.random.Generator, sessions: _Sessions, etype: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offset of each event from the start of its session, and the duration of each
    session (seconds): the time until the next event is longer after a watch."""
    n_events = etype.size
    gap = np.select(
        [etype == 0, etype == 1],
        [15 + rng.exponential(60.0, n_events), 60 + rng.exponential(420.0, n_events)],
        30 + rng.exponential(120.0, n_events),
    ).astype(np.int64)
    offset = _group_cumsum_exclusive(gap, sessions.first, sessions.length)
    duration = offset[np.append(sessions.first[1:], n_events) - 1]
    return offset, duration


def _session_starts(
    world: DemoWorld, rng: np.random.Generator, sessions: _Sessions, duration: np.ndarray
) -> np.ndarray:
    """Start time of each session: the sessions of each user are placed inside
    [first_seen, end) with random idle gaps (exponential, rescaled to the available time)
    of at least 30 minutes."""
    spec = world.spec
    n_users, end = spec.users, spec.end
    session_user = sessions.session_user
    sessions_per_user = np.bincount(session_user, minlength=n_users)
    need = np.bincount(session_user, weights=duration, minlength=n_users) + sessions_per_user * _MIN_SESSION_GAP
    first_seen = np.minimum(world.user_first_seen, end - np.ceil(need * 1.2).astype(np.int64))
    first_seen = np.maximum(first_seen, spec.start)
    avail = np.maximum(end - 1 - first_seen - need, 0)
    idle = rng.exponential(1.0, session_user.size)
    tail = rng.exponential(1.0, n_users)
    scale = avail / (np.bincount(session_user, weights=idle, minlength=n_users) + tail)
    session_gap = np.floor(idle * scale[session_user]).astype(np.int64) + _MIN_SESSION_GAP
    user_first_session = np.cumsum(sessions_per_user) - sessions_per_user
    step = session_gap + duration
    before = _group_cumsum_exclusive(step, user_first_session, sessions_per_user)
    return first_seen[session_user] + before + session_gap


def _drifting_interests(world: DemoWorld, sessions: _Sessions, session_start: np.ndarray) -> _DriftingInterests:
    """Interests drift from the early profile to the current one: the weight of the early
    profile falls from 0.7 at the start of the timeline to 0 at its end."""
    spec = world.spec
    tau = np.clip((session_start - spec.start) / (spec.days * _DAY), 0.0, 1.0)
    cum_profiles = np.cumsum(np.concatenate([world.user_interests, world.user_interests_early]), axis=1)
    cum_profiles[:, -1] = 1.0
    return _DriftingInterests(cum_profiles, 0.7 * (1.0 - tau), sessions.session_user, spec.users)


def _draw_items(
    world: DemoWorld,
    rng: np.random.Generator,
    sessions: _Sessions,
    ts: np.ndarray,
    session_cat: np.ndarray,
    interests: _DriftingInterests,
) -> np.ndarray:
    """Items, one position of the sessions at a time.

    The first event of a session gets a quality-weighted item of the session
    category; a later one (unless it wanders off the session category) repeats
    the previous item, moves to an item related to it, or else gets a
    quality-weighted item of the session (or the wandering) category.
    """
    sampler = _ItemSampler(world)
    cat_of = world.item_category
    zorder = np.lexsort((world.item_latent, cat_of))
    zpos = np.empty_like(zorder)
    zpos[zorder] = np.arange(zorder.size)
    item = np.empty(sessions.user.size, dtype=np.int64)
    by_pos = np.argsort(sessions.pos, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(sessions.pos))])
    for j in range(bounds.size - 1):
        idx = by_pos[bounds[j] : bounds[j + 1]]
        s = sessions.session[idx]
        t = ts[idx]
        scat = session_cat[s]
        if j == 0:
            item[idx] = sampler.sample(scat, t, rng.random(idx.size))
            continue
        prev = item[idx - 1]
        r = rng.random(idx.size)
        wander = r < _P_WANDER
        in_cat = cat_of[prev] == scat
        repeat = ~wander & in_cat & (r < _P_WANDER + _P_REPEAT)
        follow = ~wander & in_cat & ~repeat & (r < _P_WANDER + _P_REPEAT + _P_FOLLOW)
        followed, has_related = _related_items(world, rng, zorder, zpos, prev, t)
        follow &= has_related
        # Otherwise a quality-weighted item of the session (or a wandering) category.
        wander_cat = interests.draw(rng, s)
        fresh = sampler.sample(np.where(wander, wander_cat, scat), t, rng.random(idx.size))
        item[idx] = np.where(repeat, prev, np.where(follow, followed, fresh))
    return item


def _related_items(
    world: DemoWorld,
    rng: np.random.Generator,
    zorder: np.ndarray,
    zpos: np.ndarray,
    prev: np.ndarray,
    t: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """A related item for each ``prev`` item: a quality-weighted neighbour on the
    category's latent axis (``zorder`` sorts the items by category then latent position,
    ``zpos`` is its inverse), created at or before ``t``; also whether there was one."""
    n_items, cat_of = world.spec.items, world.item_category
    cand = zpos[prev][:, None] + _NEIGHBOUR_OFFSETS[None, :]
    ok = (cand >= 0) & (cand < n_items)
    cand = zorder[np.clip(cand, 0, n_items - 1)]
    ok &= (cat_of[cand] == cat_of[prev][:, None]) & (world.item_created[cand] <= t[:, None])
    w = np.cumsum(world.item_quality[cand] * _NEIGHBOUR_WEIGHTS * ok, axis=1)
    pick = (rng.random(prev.size)[:, None] * w[:, -1:] >= w).sum(axis=1)
    return cand[np.arange(prev.size), np.minimum(pick, 3)], w[:, -1] > 0


def _event_values(
    world: DemoWorld, rng: np.random.Generator, user: np.ndarray, item: np.ndarray, etype: np.ndarray
) -> np.ndarray:
    """Event values: 1.0 for a click, watched fraction (higher for favourite categories)
    for a watch, the price for a purchase."""
    rel = world.user_interests[user, world.item_category[item]] / world.user_interests.max(axis=1)[user]
    watched = np.clip(np.round(rng.beta(1.0 + 3.0 * rel, 1.6), 3), 0.01, 1.0)
    return np.select([etype == 0, etype == 1], [1.0, watched], world.item_price[item])


def _impressions(world: DemoWorld, item: np.ndarray, ts: np.ndarray) -> pa.ChunkedArray:
    """`|`-joined impression lists: 3-10 distinct items shown with each event.

    Besides the interacted item, slots hold same-category or globally popular
    items (quality-weighted, all created before the event); three always
    available anchor items fill up rows whose candidates collided.
    """
    spec = world.spec
    rng = _rng(spec, _S_IMPRESSIONS)
    sampler = _ItemSampler(world)
    ids = pa.array(world.item_ids, type=pa.string())
    cum_share = np.cumsum(world.category_share)
    cum_share[-1] = 1.0
    anchors = np.arange(3)  # created before start, distinct
    n_cols = 1 + _IMPRESSION_RANDOM_COLS + anchors.size
    chunks = []
    for a in range(0, item.size, _CHUNK):
        it, t = item[a : a + _CHUNK], ts[a : a + _CHUNK]
        n = it.size
        k = rng.integers(_IMPRESSION_MIN, _IMPRESSION_MAX + 1, size=n)
        m = np.empty((n, n_cols), dtype=np.int64)
        m[:, 0] = it
        m[:, -anchors.size :] = anchors
        # Slot j (1-based) is only needed when it can make it into the first k
        # distinct items (k - 1 others plus one spare for collisions).
        need = np.arange(1, 1 + _IMPRESSION_RANDOM_COLS)[None, :] <= k[:, None]
        rows, _ = np.nonzero(need)
        n_need = rows.size
        same = rng.random(n_need) < 0.5
        pop_cat = np.minimum(np.searchsorted(cum_share, rng.random(n_need), side="right"), spec.categories - 1)
        cats = np.where(same, world.item_category[it][rows], pop_cat)
        slots = np.full((n, _IMPRESSION_RANDOM_COLS), -1, dtype=np.int64)
        slots[need] = sampler.sample_hourly(cats, t[rows], rng.random(n_need))
        m[:, 1 : 1 + _IMPRESSION_RANDOM_COLS] = slots
        # Keep the first occurrence of each item, then the first k of them.
        keep = m >= 0
        for j in range(1, n_cols):
            keep[:, j] &= ~(m[:, :j] == m[:, j : j + 1]).any(axis=1)
        rank = np.cumsum(keep, axis=1) - 1
        sel = keep & (rank < k[:, None])
        out = np.full((n, _IMPRESSION_MAX), -1, dtype=np.int64)
        rows, cols = np.nonzero(sel)  # row-major: ranks in order
        out[rows, rank[rows, cols]] = m[rows, cols]
        # The interacted item sits at a random rank, more often near the top.
        length = sel.sum(axis=1)
        at = np.minimum((length * rng.random(n) ** 1.5).astype(np.int64), length - 1)
        r = np.arange(n)
        out[r, 0], out[r, at] = out[r, at], it
        cols_str = [pc.take(ids, pa.array(out[:, j], mask=out[:, j] < 0)) for j in range(_IMPRESSION_MAX)]
        chunks.append(pc.binary_join_element_wise(*cols_str, "|", null_handling="skip"))
    return pa.chunked_array(chunks, type=pa.string())


def interactions_schema() -> dict:
    return {
        "type": "record",
        "name": "Interactions",
        "namespace": "com.amazonaws.personalize.schema",
        "fields": [
            {"name": "USER_ID", "type": "string"},
            {"name": "ITEM_ID", "type": "string"},
            {"name": "TIMESTAMP", "type": "long"},
            {"name": "EVENT_TYPE", "type": "string"},
            {"name": "EVENT_VALUE", "type": "float"},
            {"name": "IMPRESSION", "type": "string"},
            {"name": "DEVICE", "type": "string", "categorical": True},
        ],
        "version": "1.0",
    }


def items_schema() -> dict:
    return {
        "type": "record",
        "name": "Items",
        "namespace": "com.amazonaws.personalize.schema",
        "fields": [
            {"name": "ITEM_ID", "type": "string"},
            {"name": "GENRE", "type": ["null", "string"], "categorical": True},
            {"name": "PRICE", "type": "float"},
            {"name": "CREATION_TIMESTAMP", "type": "long"},
        ],
        "version": "1.0",
    }


def users_schema() -> dict:
    return {
        "type": "record",
        "name": "Users",
        "namespace": "com.amazonaws.personalize.schema",
        "fields": [
            {"name": "USER_ID", "type": "string"},
            {"name": "AGE_GROUP", "type": "string", "categorical": True},
            {"name": "MEMBERSHIP", "type": "string", "categorical": True},
        ],
        "version": "1.0",
    }


def _write_csv(table: pa.Table, location: Location) -> None:
    with location.atomic_writer() as fh:
        fh.write((",".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False, quoting_style="none"))


def _interactions_table(world: DemoWorld) -> pa.Table:
    ev = _simulate(world)
    order = np.argsort(ev["ts"], kind="stable")
    item = ev["item"][order]
    ts = ev["ts"][order]
    return pa.table(
        {
            "USER_ID": pc.take(pa.array(world.user_ids, type=pa.string()), ev["user"][order]),
            "ITEM_ID": pc.take(pa.array(world.item_ids, type=pa.string()), item),
            "TIMESTAMP": pa.array(ts, type=pa.int64()),
            "EVENT_TYPE": pc.take(pa.array(EVENT_TYPES), ev["etype"][order]),
            "EVENT_VALUE": pa.array(ev["value"][order], type=pa.float64()),
            "IMPRESSION": _impressions(world, item, ts),
            "DEVICE": pc.take(pa.array(DEVICES), ev["device"][order]),
        }
    )


def _items_table(world: DemoWorld) -> pa.Table:
    names = pa.array(world.category_names, type=pa.string())
    sec = world.item_secondary
    genre = pc.binary_join_element_wise(
        pc.take(names, world.item_category),
        pc.take(names, pa.array(sec[:, 0], mask=sec[:, 0] < 0)),
        pc.take(names, pa.array(sec[:, 1], mask=sec[:, 1] < 0)),
        "|",
        null_handling="skip",
    )
    return pa.table(
        {
            "ITEM_ID": pa.array(world.item_ids, type=pa.string()),
            "GENRE": genre,
            "PRICE": pa.array(world.item_price, type=pa.float64()),
            "CREATION_TIMESTAMP": pa.array(world.item_created, type=pa.int64()),
        }
    )


def _users_table(world: DemoWorld) -> pa.Table:
    return pa.table(
        {
            "USER_ID": pa.array(world.user_ids, type=pa.string()),
            "AGE_GROUP": pc.take(pa.array(AGE_GROUPS), world.user_age_group),
            "MEMBERSHIP": pc.take(pa.array(MEMBERSHIPS), world.user_premium.astype(np.int64)),
        }
    )


def _batch_users(world: DemoWorld) -> list[str]:
    spec = world.spec
    rng = _rng(spec, _S_BATCH)
    pick = np.sort(rng.choice(spec.users, size=min(_BATCH_USERS, spec.users), replace=False))
    known = [str(x) for x in world.user_ids[pick]]
    width = len(world.user_ids[0]) - 1
    unknown = [f"u{spec.users + k:0{width}d}" for k in (1, 2)]  # same format, out of range
    return known + unknown


def generate(out_dir: str | os.PathLike, spec: DemoSpec = DemoSpec()) -> dict:
    """Write the dataset group into ``out_dir`` and return a short summary.

    Files: ``interactions.csv``, ``items.csv``, ``users.csv``,
    ``schemas/{interactions,items,users}.json`` and ``batch-input/users.jsonl``.
    Each file is written to a temporary name in its folder and renamed into place
    (:meth:`Location.atomic_writer`), so ``out_dir`` may also be an ``s3://`` prefix.
    """
    t0 = time.perf_counter()
    out = as_location(out_dir)
    world = build_world(spec)

    _write_csv(_interactions_table(world), out.child("interactions.csv"))
    _write_csv(_items_table(world), out.child("items.csv"))
    _write_csv(_users_table(world), out.child("users.csv"))
    for name, schema in (
        ("interactions", interactions_schema()),
        ("items", items_schema()),
        ("users", users_schema()),
    ):
        out.child("schemas", f"{name}.json").write_text(json.dumps(schema, indent=2) + "\n")
    lines = "".join(json.dumps({"userId": uid}) + "\n" for uid in _batch_users(world))
    out.child("batch-input", "users.jsonl").write_text(lines)

    return {
        "path": out.url,
        "interactions": spec.interactions,
        "users": spec.users,
        "items": spec.items,
        "seconds": round(time.perf_counter() - t0, 3),
    }
