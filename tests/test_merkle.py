"""RFC 9162 §2.1 Merkle Tree Hashes and proofs against the published RFC 6962 test vectors.

The vectors are the eight-leaf tree used across the Certificate Transparency implementations
(google/trillian merkle/testonly/constants.go and merkle/log_verifier_test.go): leaf inputs,
the root of every prefix, and known inclusion and consistency proofs.
"""

from __future__ import annotations

import pytest

from klaviyo_consent import merkle

h = bytes.fromhex

LEAF_INPUTS = [
    h(x)
    for x in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    h(x)
    for x in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
# (leaf index, tree size, path)
INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (0, 1, []),
]
# (first size, second size, proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


def tree() -> merkle.MemoryTree:
    return merkle.MemoryTree(merkle.leaf_hash(entry) for entry in LEAF_INPUTS)


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_root_of_every_prefix_matches_the_rfc_vectors(size: int) -> None:
    assert merkle.mth(LEAF_INPUTS[:size]) == ROOTS[size]
    assert tree().root(size) == ROOTS[size]
    frontier = merkle.Frontier()
    for entry in LEAF_INPUTS[:size]:
        frontier.append(merkle.leaf_hash(entry))
    assert frontier.root() == ROOTS[size]


def test_frontier_reports_every_perfect_subtree_it_completes() -> None:
    seen: dict[tuple[int, int], bytes] = {}
    frontier = merkle.Frontier()
    for entry in LEAF_INPUTS:
        frontier.append(merkle.leaf_hash(entry), lambda lv, ix, hv: seen.__setitem__((lv, ix), hv))
    assert seen[(3, 0)] == ROOTS[8]
    assert seen[(2, 1)] == h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")
    assert len(seen) == 8 + 4 + 2 + 1


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_proofs_match_the_rfc_vectors_and_verify(
    index: int, size: int, path: list[str]
) -> None:
    t = tree()
    proof = merkle.inclusion_proof(index, size, t.subtree)
    assert proof == [h(p) for p in path]
    merkle.verify_inclusion(index, size, t.leaves[index], proof, ROOTS[size])


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION[:4])
def test_inclusion_proof_fails_on_any_wrong_input(index: int, size: int, path: list[str]) -> None:
    leaf, proof, root = tree().leaves[index], [h(p) for p in path], ROOTS[size]
    wrong = [
        (index + 1, size, leaf, proof, root),
        (index ^ 2, size, leaf, proof, root),
        (index, size * 2, leaf, proof, root),
        (index, size, merkle.leaf_hash(b"wrong"), proof, root),
        (index, size, leaf, proof, merkle.EMPTY_ROOT),
        (index, size, leaf, proof + [root], root),
        (index, size, leaf, proof[:-1], root),
        (index, size, leaf, [root] + proof, root),
    ]
    for i in range(len(proof)):
        wrong.append((index, size, leaf, proof[:i] + [merkle.EMPTY_ROOT] + proof[i + 1 :], root))
    for args in wrong:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(*args)


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_rfc_vectors_and_verify(
    first: int, second: int, proof: list[str]
) -> None:
    generated = merkle.consistency_proof(first, second, tree().subtree)
    assert generated == [h(p) for p in proof]
    merkle.verify_consistency(first, second, ROOTS[first], ROOTS[second], generated)


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY[1:])
def test_consistency_proof_fails_on_any_wrong_input(
    first: int, second: int, proof: list[str]
) -> None:
    path = [h(p) for p in proof]
    wrong = [
        (first - 1, second, ROOTS[first], ROOTS[second], path),
        (first + 1, second, ROOTS[first], ROOTS[second], path),
        (first, second, ROOTS[second], ROOTS[first], path),
        (first, second, ROOTS[first], ROOTS[second], []),
        (first, second, ROOTS[first], ROOTS[second], path + [ROOTS[first]]),
        (first, second, ROOTS[first], ROOTS[second], path[:-1]),
        (first, second, merkle.EMPTY_ROOT, ROOTS[second], path),
    ]
    for i in range(len(path)):
        wrong.append(
            (
                first,
                second,
                ROOTS[first],
                ROOTS[second],
                path[:i] + [merkle.EMPTY_ROOT] + path[i + 1 :],
            )
        )
    for args in wrong:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(*args)


def test_every_proof_of_generated_trees_verifies() -> None:
    t = merkle.MemoryTree(merkle.leaf_hash(str(i).encode()) for i in range(70))
    for size in range(1, 71):
        root = t.root(size)
        for index in range(size):
            merkle.verify_inclusion(
                index, size, t.leaves[index], merkle.inclusion_proof(index, size, t.subtree), root
            )
        for first in range(size + 1):
            merkle.verify_consistency(
                first, size, t.root(first), root, merkle.consistency_proof(first, size, t.subtree)
            )


# -- canonical bytes: the fast path writes exactly what RFC 8785 (the rfc8785 package) writes --


def _json_values():
    from hypothesis import strategies as st

    text = st.text(st.characters(blacklist_categories=()), max_size=12)  # controls, surrogates
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**60), max_value=2**60)
        | text
        | st.floats(allow_nan=False, allow_infinity=False)
    )
    keys = st.text(st.characters(max_codepoint=0x10FFFF, blacklist_categories=("Cs",)), max_size=6)
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(keys | st.text("abcxyz_", max_size=5), children, max_size=4),
        max_leaves=20,
    )


def test_canonical_bytes_are_rfc8785s_for_every_record():
    import rfc8785
    from hypothesis import given, settings

    from klaviyo_consent.receipts import canonical

    @settings(max_examples=400, derandomize=True, deadline=None)
    @given(_json_values().map(lambda v: {"record": v}))
    def agree(record):
        try:
            expected = rfc8785.dumps(record)
        except Exception as error:  # noqa: BLE001 - JCS refuses it: so must we, alike
            with pytest.raises(type(error)):
                canonical(record)
            return
        assert canonical(record) == expected

    agree()


def test_canonical_bytes_of_a_ledger_record_with_every_escape_are_rfc8785s():
    import rfc8785

    from klaviyo_consent.receipts import canonical

    record = {
        "b": ["\x00\x01\x1f\x7f", 'quote " backslash \\ \b\f\n\r\t', "é ü ß 中 😀", 2**53 - 1],
        "a": {"z": None, "y": True, "x": -(2**53 - 1)},
    }
    assert canonical(record) == rfc8785.dumps(record)
