"""The truth of the fleet test (test_fleet.py): what a deterministic load
sends to each of three replicas, and what every dashboard query and alert
expression must therefore say about the fleet.

Each replica has its own counters, so its traffic is a fixed pattern: every
100th request of replica a is a 5xx, every 4th of replica c; replica c is
slow on 40 % of its requests. Replicas get 6, 3 and 1 of every 10 requests.
A fleet ratio is then the weighted one (sum(rate)/sum(rate)); the average of
the three per-pod ratios, the mistake the test is there to catch, is far
from it (printed beside the truth)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

REPLICAS = ("a", "b", "c")
# which replica serves each request, in turn (6 : 3 : 1)
CYCLE = ("a", "a", "b", "a", "a", "b", "a", "c", "a", "b")
HTTP_ERR_EVERY = {"a": 100, "b": 50, "c": 4}
AI_FAIL_EVERY = {"a": 100, "b": 100, "c": 4}
MEM_FAIL_EVERY = {"a": 100, "b": 100, "c": 5}
AI_SECONDS = {"a": 0.2, "b": 0.5, "c": 5.0}
AI_TTFC = {"a": 0.05, "b": 0.15, "c": 1.5}
MODEL = "gpt-4o-mini"
# examples/prices.yaml's entry for it, USD per million tokens
PRICE = {"input": 0.15, "output": 0.60, "cache_read_input": 0.075}
# per replica, the memory.size of its two worker processes
MEMORY = {"a": (1_000_000, 2_000_000), "b": (30_000, 40_000), "c": (5_000, 6_000)}
ROUTES = (("GET", "/api/health"), ("POST", "/api/chat"))
HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, math.inf]
AI_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92, math.inf]
# the steady load: per tick of TICK seconds, 3 HTTP requests, 1 AI call and
# 1 memory operation, each to the next replica of its own CYCLE
TICK = 0.1
HTTP_PER_TICK = 3


def http_request(r: str, k: int) -> dict:
    """The k-th HTTP request (k from 1) of replica r."""
    method, route = ROUTES[k % 2]
    slow = r == "c" and k % 5 < 2
    seconds = {"a": 0.03, "b": 0.3, "c": 3.0 if slow else 0.3}[r]
    status = 500 if k % HTTP_ERR_EVERY[r] == 0 else 200
    return {"method": method, "endpoint": route, "status": str(status), "seconds": seconds}


def ai_call(r: str, k: int) -> dict:
    """The k-th AI call of replica r: every 4th chat call reads 40 of its
    input tokens from the provider's prompt cache; chat answers stream, with
    a time to first chunk of its replica's."""
    op = "chat" if k % 2 == 0 else "embeddings"
    chat = op == "chat"
    return {"type": op, "failed": k % AI_FAIL_EVERY[r] == 0, "seconds": AI_SECONDS[r],
            "input": 100 + 50 * (k % 3), "output": 20 if chat else 0,
            "cache_read": 40 if chat and k % 4 == 0 else 0, "ttfc": AI_TTFC[r] if chat else None}


def cost(call: dict) -> float:
    """USD of one call under examples/prices.yaml's gpt-4o-mini entry: the
    cached input at its own rate, the rest of the input at the input rate."""
    p = PRICE
    fresh = call["input"] - call["cache_read"]
    return (fresh * p["input"] + call["cache_read"] * p["cache_read_input"] + call["output"] * p["output"]) / 1e6


def memory_op(r: str, k: int) -> dict:
    return {"operation": "store" if k % 2 == 0 else "retrieve",
            "status": "error" if k % MEM_FAIL_EVERY[r] == 0 else "success"}


class Tally:
    """Counts of what was sent, fleet-wide and per replica."""

    def __init__(self):
        self.http = Counter()          # (replica, method, endpoint, status)
        self.http_le = Counter()       # (replica, endpoint, le) non-cumulative
        self.ai = Counter()            # (replica, type, status)
        self.ai_le = Counter()         # (replica, type, le)
        self.tokens = Counter()        # (type, token_type)
        self.mem = Counter()           # (replica, operation, status)
        self.model_tokens = Counter()  # (model, token_type)
        self.cost = Counter()          # (model,) USD
        self.ttfc_le = Counter()       # (replica, le)

    def add_http(self, r, req):
        self.http[(r, req["method"], req["endpoint"], req["status"])] += 1
        le = next(b for b in HTTP_BUCKETS if req["seconds"] <= b)
        self.http_le[(r, req["endpoint"], le)] += 1

    def add_ai(self, r, call):
        self.ai[(r, call["type"], "error" if call["failed"] else "success")] += 1
        le = next(b for b in AI_BUCKETS if call["seconds"] <= b)
        self.ai_le[(r, call["type"], le)] += 1
        self.tokens[(call["type"], "input")] += call["input"]
        if call["output"]:
            self.tokens[(call["type"], "output")] += call["output"]
        for token_type in ("input", "output", "cache_read"):
            if call[token_type]:
                name = "cache_read_input" if token_type == "cache_read" else token_type
                self.model_tokens[(MODEL, name)] += call[token_type]
        self.cost[(MODEL,)] += cost(call)
        if call["ttfc"] is not None:
            self.ttfc_le[(r, next(b for b in AI_BUCKETS if call["ttfc"] <= b))] += 1

    def add_mem(self, r, op):
        self.mem[(r, op["operation"], op["status"])] += 1


def steady_tally(ticks: int = 20_000) -> tuple[Tally, float]:
    """The steady load's counts over `ticks` ticks, and their duration (s):
    long-run rates for the queries over a window of steady load only."""
    t = Tally()
    k = defaultdict(int)
    pos = Counter()
    for _ in range(ticks):
        for kind, n in (("http", HTTP_PER_TICK), ("ai", 1), ("mem", 1)):
            for _ in range(n):
                r = CYCLE[pos[kind] % len(CYCLE)]
                pos[kind] += 1
                k[(kind, r)] += 1
                if kind == "http":
                    t.add_http(r, http_request(r, k[(kind, r)]))
                elif kind == "ai":
                    t.add_ai(r, ai_call(r, k[(kind, r)]))
                else:
                    t.add_mem(r, memory_op(r, k[(kind, r)]))
    return t, ticks * TICK


def group(counter: Counter, key) -> dict:
    out: dict = defaultdict(float)
    for labels, v in counter.items():
        out[key(labels)] += v
    return dict(out)


def quantile(q: float, counts: dict) -> float:
    """histogram_quantile on non-cumulative bucket counts {le: n}, as
    Prometheus interpolates (lower bound 0 for the first bucket)."""
    les = sorted(counts)
    total = sum(counts.values())
    rank, cum, lo = q * total, 0.0, 0.0
    for i, le in enumerate(les):
        if cum + counts[le] >= rank and counts[le] > 0:
            if math.isinf(le):
                return les[i - 1] if i else 0.0
            return lo + (le - lo) * (rank - cum) / counts[le]
        cum += counts[le]
        lo = le
    return math.nan


def ratio(counter: Counter, bad, key=lambda labels: ()) -> dict:
    """sum(bad)/sum(all) per group: the fleet ratio."""
    num, den = defaultdict(float), defaultdict(float)
    for labels, v in counter.items():
        den[key(labels)] += v
        if bad(labels):
            num[key(labels)] += v
    return {g: num[g] / den[g] for g in den}


def average_of_pod_ratios(counter: Counter, bad, key=lambda labels: ()) -> dict:
    """The wrong fleet ratio: the mean of each replica's own ratio."""
    per = ratio(counter, bad, key=lambda labels: (labels[0], key(labels)))
    out = defaultdict(list)
    for (_, g), v in per.items():
        out[g].append(v)
    return {g: sum(v) / len(v) for g, v in out.items()}


def buckets_of(counter: Counter, key) -> dict:
    """{group: {le: n}} from (replica, group..., le) bucket counts."""
    out: dict = defaultdict(lambda: defaultdict(float))
    for labels, v in counter.items():
        out[key(labels)][labels[-1]] += v
    return out
