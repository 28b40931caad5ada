"""docs/sketch-test-vectors.tsv reproduced by an independent SipHash-2-4.

The distinct-count sketch's registers are merged across pods (and could be
merged with another tool's): that only works if everyone hashes an id the
same way. This reimplements SipHash-2-4 from the paper (Aumasson and
Bernstein, 2012) in plain Python, checks it against the paper's vector, and
recomputes every line of the vectors file the sidecar generates.
"""

from pathlib import Path

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "sketch-test-vectors.tsv"
MASK = (1 << 64) - 1


def _rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & MASK


def siphash24(key: bytes, msg: bytes) -> int:
    k0 = int.from_bytes(key[:8], "little")
    k1 = int.from_bytes(key[8:16], "little")
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D, k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]

    def rounds(n):
        for _ in range(n):
            v[0] = (v[0] + v[1]) & MASK
            v[1] = _rotl(v[1], 13) ^ v[0]
            v[0] = _rotl(v[0], 32)
            v[2] = (v[2] + v[3]) & MASK
            v[3] = _rotl(v[3], 16) ^ v[2]
            v[0] = (v[0] + v[3]) & MASK
            v[3] = _rotl(v[3], 21) ^ v[0]
            v[2] = (v[2] + v[1]) & MASK
            v[1] = _rotl(v[1], 17) ^ v[2]
            v[2] = _rotl(v[2], 32)

    tail = len(msg) % 8
    for i in range(0, len(msg) - tail, 8):
        m = int.from_bytes(msg[i : i + 8], "little")
        v[3] ^= m
        rounds(2)
        v[0] ^= m
    b = ((len(msg) & 0xFF) << 56) | int.from_bytes(msg[len(msg) - tail :], "little")
    v[3] ^= b
    rounds(2)
    v[0] ^= b
    v[2] ^= 0xFF
    rounds(4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def register_rank(h: int, p: int):
    rest = (h << p) & MASK
    zeros = 64 - rest.bit_length() if rest else 64
    return h >> (64 - p), min(zeros, 64 - p) + 1


def test_siphash_matches_the_paper():
    assert siphash24(bytes(range(16)), bytes(range(15))) == 0xA129CA6149BE45E5


def test_vectors_file_is_reproduced():
    lines = VECTORS.read_text(encoding="utf-8").splitlines()
    p = int(next(line for line in lines if "p = " in line).rsplit("p = ", 1)[1].rstrip("."))
    rows = [line.split("\t") for line in lines if not line.startswith("#")]
    assert rows[0] == ["id", "key", "hash", "register", "rank"]
    assert len(rows) > 10
    for ident, key, hash_hex, reg, rank in rows[1:]:
        h = siphash24(bytes.fromhex(key), ident.encode("utf-8"))
        assert f"{h:016x}" == hash_hex, ident
        assert register_rank(h, p) == (int(reg), int(rank)), ident
