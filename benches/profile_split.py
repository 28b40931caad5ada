#!/usr/bin/env python3
"""Splits a callgrind profile of the sidecar (benches/profile.sh, recorded
with --separate-callers so that every cost has its chain of callers) into
where the instructions go.

Each cost is charged to an owner: the first function up its caller chain
that is not a helper (memcpy/memcmp, the allocator, bytes/core/alloc/std
containers, hashing): transport (h2, hyper, tonic, tokio_util's framing,
http, prost), walk (derive/wire.rs), validate (derive/validate.rs),
rules (the rest of derive/), store (metrics/), the forwarder's queue
(export/ but for the two that follow), disk (export/otlp/disk.rs, crc32fast),
send (export/otlp/client.rs), compress (flate2, zlib-rs, zstd), receiver
(the rest of the sidecar), runtime (tokio, mio, syscall wrappers), other. Inside the sidecar's own functions
the source line decides (code of derive/wire.rs inlined into derive/mod.rs
is walk). The columns say how much of each owner's cost is memcpy/memmove/
memset and how much the allocator.

    profile_split.py CALLGRIND_OUT [REQUESTS [ITEMS_PER_REQUEST]]
"""
import re
import sys
from collections import defaultdict

COPY = re.compile(r"^(__)?(memcpy|memmove|memset|mempcpy)|^__mem(cpy|move|set)_")
ALLOC = re.compile(
    r"^(malloc|free|realloc|calloc|cfree|_int_(malloc|free|realloc)|__libc_(malloc|free|realloc|calloc)"
    r"|tcache_|malloc_consolidate|unlink_chunk|__rust_(alloc|dealloc|realloc|alloc_zeroed)|__rdl_|sysmalloc"
    r"|alloc::alloc::|alloc::raw_vec::|<alloc::raw_vec::|mremap|munmap|mmap|brk|__brk|sbrk|__sbrk|__default_morecore)"
)
HELPER_CRATES = {"core", "alloc", "std", "bytes", "hashbrown", "foldhash", "smallvec", "memchr", "itoa",
                 "indexmap", "arrayvec"}
HELPER = re.compile(r"^(__)?(memcmp|bcmp|strlen|memchr)|^__mem(cmp|chr)|^__strlen|^_?_?rust_")
TRANSPORT = {"h2", "hyper", "hyper_util", "tonic", "tonic_prost", "http", "http_body", "http_body_util",
             "tower", "tower_service", "tower_layer", "axum", "axum_core", "prost", "httparse",
             "percent_encoding", "base64", "tokio_util"}
COMPRESS = {"flate2", "zlib_rs", "miniz_oxide", "zstd", "zstd_safe", "ruzstd"}
RUNTIME = {"tokio", "mio", "tokio_stream", "futures_util", "futures_core", "futures_channel", "parking_lot",
           "parking_lot_core", "crossbeam_utils", "sync_wrapper", "want", "try_lock", "atomic_waker", "slab",
           "pin_project_lite", "tracing", "tracing_core"}
SYSCALL = re.compile(r"^(epoll_wait|epoll_ctl|__GI_|__libc_|read|write|writev|recv|send|sendmsg|recvmsg|"
                     r"recvfrom|sendto|syscall|clock_gettime|__clock_gettime|__vdso|pthread_|__pthread|futex|"
                     r"sched_yield|__lll_|__futex|accept4?|close|__close)")
OURS = "geometra_sidecar"


def crate_of(name):
    m = re.search(r"([A-Za-z_][A-Za-z_0-9]*)::", name.lstrip("<&*"))
    return m.group(1) if m else ""


def kind(name):
    """helper kind ('copies', 'allocator', 'helper') or None for an owner."""
    if COPY.search(name):
        return "copies"
    if ALLOC.search(name):
        return "allocator"
    if HELPER.search(name) or crate_of(name) in HELPER_CRATES:
        return "helper"
    return None


def owner_of_fn(name):
    crate = crate_of(name)
    if crate == OURS:
        if "::derive::wire::" in name:
            return "walk"
        if "::derive::validate::" in name:
            return "validate"
        if "::derive::" in name:
            return "rules"
        if "::metrics::" in name:
            return "store"
        if "::export::otlp::disk::" in name:
            return "disk"
        if "::export::otlp::client::" in name:
            return "send"
        if "::export::" in name:
            return "queue"
        return "receiver"
    if crate == "crc32fast":
        return "disk"
    if crate in COMPRESS:
        return "compress"
    if crate in TRANSPORT:
        return "transport"
    if crate in RUNTIME or SYSCALL.search(name):
        return "runtime"
    return "other"


def owner_of_file(path):
    for part, who in (("/derive/wire.rs", "walk"), ("/derive/validate.rs", "validate"),
                      ("/derive/", "rules"), ("/metrics/", "store"), ("/export/otlp/disk.rs", "disk"),
                      ("/export/otlp/client.rs", "send"), ("/export/", "queue")):
        if part in path:
            return who
    if "/src/" in path and "/.cargo/" not in path and "/rustc/" not in path and "/library/" not in path:
        return "receiver"
    return None


def charge(ctx, path):
    """(owner, how) of one cost: ctx is fn'caller'caller..., path its source file."""
    frames = ctx.split("'")
    how = kind(frames[0]) or "code"
    for f in frames:
        if kind(f) is None:
            owner = owner_of_fn(f)
            if f is frames[0] and crate_of(f) == OURS:
                owner = owner_of_file(path) or owner
            return owner, how
    return "other", how


def parse(path):
    names, files = {}, {}
    cost = defaultdict(int)  # (ctx, file) -> self instructions
    npos = 1
    fn, fl, cur = "", "", ""
    in_call = False
    ref = re.compile(r"^\((\d+)\)(?: (.*))?$")

    def resolve(table, v):
        m = ref.match(v)
        if not m:
            return v
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), v)

    with open(path, errors="replace") as f:
        for line in f:
            c = line[:1]
            if c.isdigit() or c in "+-*":
                if in_call:
                    in_call = False
                    continue
                parts = line.split()
                if len(parts) > npos:
                    cost[(fn, cur)] += int(parts[npos])
            elif line.startswith("fn="):
                fn = resolve(names, line[3:].strip())
                cur = fl
            elif line.startswith("fl="):
                fl = cur = resolve(files, line[3:].strip())
            elif line.startswith(("fi=", "fe=")):
                cur = resolve(files, line[3:].strip())
            elif line.startswith(("cfn=",)):
                resolve(names, line[4:].strip())
            elif line.startswith(("cfi=", "cfl=")):
                resolve(files, line[4:].strip())
            elif line.startswith("calls="):
                in_call = True
            elif line.startswith("positions:"):
                npos = len(line.split()[1:])
    return cost


ORDER = ["transport", "walk", "validate", "rules", "store", "queue", "disk", "send", "compress", "receiver",
         "runtime", "other"]


def main():
    cost = parse(sys.argv[1])
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    per_req = int(sys.argv[3]) if len(sys.argv) > 3 else 512
    split = defaultdict(lambda: defaultdict(int))
    byfn = defaultdict(int)
    for (ctx, path), ir in cost.items():
        owner, how = charge(ctx, path)
        split[owner][how] += ir
        byfn[(owner, ctx.split("'")[0])] += ir
    total = sum(sum(v.values()) for v in split.values())
    hdr = f"{'owner':<11}{'instructions':>15}{'share':>7}{'of which memcpy':>17}{'allocator':>11}"
    if requests:
        hdr += f"{'per request':>13}{'per item':>10}"
    print(hdr)
    for o in ORDER:
        v = split.get(o)
        if not v:
            continue
        t = sum(v.values())
        row = f"{o:<11}{t:>15,}{100 * t / total:>6.1f}%{100 * v['copies'] / total:>16.1f}%{100 * v['allocator'] / total:>10.1f}%"
        if requests:
            row += f"{t // requests:>13,}{t / requests / per_req:>10.0f}"
        print(row)
    row = f"{'total':<11}{total:>15,}{100.0:>6.1f}%"
    if requests:
        row += f"{'':>27}{total // requests:>13,}{total / requests / per_req:>10.0f}"
    print(row)
    print("\ntop functions (self, charged to owner):")
    for (o, f), ir in sorted(byfn.items(), key=lambda x: -x[1])[:20]:
        print(f"  {100 * ir / total:5.1f}%  {o:<9} {f[:120]}")


main()
