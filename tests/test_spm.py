"""A SentencePiece tokenizer.model written from a copy's tokenizer.json (probes/spm.py).

Pure parts here (the protobuf writer, the merges a SentencePiece model implies, its BPE, the
reasons a tokenizer.json cannot give one); tests/test_releases.py checks the written models with
the real sentencepiece library and llama.cpp's converter."""

from __future__ import annotations

import struct

from probes import spm

SPACE = spm.SPACE


def _tokenizer_json(
    vocab: dict[str, int], merges: list[str], *, prefix: bool = False, added: list[dict] | None = None
) -> dict:
    normalizer = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}
    if prefix:
        normalizer = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPACE}, normalizer]}
    return {
        "model": {
            "type": "BPE",
            "byte_fallback": True,
            "unk_token": "<unk>",
            "vocab": vocab,
            "merges": merges,
        },
        "normalizer": normalizer,
        "added_tokens": added or [],
    }


def _small() -> dict:
    pieces = ["<unk>", "<s>", *spm.BYTE_PIECES, "a", "b", SPACE, "ab", f"{SPACE}ab", "abab"]
    vocab = {p: i for i, p in enumerate(pieces)}
    added = [{"id": 0, "content": "<unk>", "special": True}, {"id": 1, "content": "<s>", "special": True}]
    return _tokenizer_json(vocab, ["a b", f"{SPACE} ab", "ab ab"], added=added)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        shift += 7
        if not byte & 0x80:
            return value, at


def _fields(data: bytes) -> list[tuple[int, object]]:
    """A minimal protobuf reader: (field number, value) at the top level."""
    out, at = [], 0
    while at < len(data):
        key, at = _read_varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _read_varint(data, at)
        elif wire == 5:
            value, at = struct.unpack("<f", data[at : at + 4])[0], at + 4
        else:
            size, at = _read_varint(data, at)
            value, at = data[at : at + size], at + size
        out.append((number, value))
    return out


def test_pieces_are_scored_by_the_rank_of_the_merge_that_makes_them():
    found = spm.pieces_from_tokenizer_json(_small())
    assert not isinstance(found, str)
    pieces, prefix = found
    assert prefix is False
    by_text = {p.text: p for p in pieces}
    assert by_text["<unk>"].kind == spm.UNKNOWN and by_text["<s>"].kind == spm.CONTROL
    assert by_text["<0x41>"].kind == spm.BYTE and by_text["a"].kind == spm.NORMAL
    assert by_text["ab"].score > by_text[f"{SPACE}ab"].score > by_text["abab"].score
    assert by_text["a"].score == 0.0


def test_sentencepiece_bpe_merges_the_best_scored_pair_and_falls_back_to_bytes():
    pieces, _ = spm.pieces_from_tokenizer_json(_small())  # type: ignore[misc]
    ids = {p.text: i for i, p in enumerate(pieces)}
    assert spm.encode("abab", pieces, dummy_prefix=False) == [ids["abab"]]
    assert spm.encode(" ab", pieces, dummy_prefix=False) == [ids[f"{SPACE}ab"]]
    assert spm.encode("ab", pieces, dummy_prefix=True) == [ids[f"{SPACE}ab"]]
    assert spm.encode("é", pieces, dummy_prefix=False) == [ids["<0xC3>"], ids["<0xA9>"]]


def test_complete_merges_list_every_split_best_first():
    vocab = {"a": 0, "b": 1, "ab": 2, "abb": 3, "bb": 4}
    merges = spm.complete_merges(vocab, {"ab": -1.0, "bb": -2.0, "abb": -3.0})
    assert merges == [("a", "b"), ("b", "b"), ("a", "bb"), ("ab", "b")]


def test_the_model_proto_carries_pieces_trainer_and_normalizer():
    pieces, prefix = spm.pieces_from_tokenizer_json(_small())  # type: ignore[misc]
    data = spm.model_bytes(pieces, dummy_prefix=True, roles={"unk": "<unk>", "bos": "<s>"})
    fields = _fields(data)
    written = [dict(_fields(v)) for n, v in fields if n == 1]
    assert [w[1].decode() for w in written] == [p.text for p in pieces]
    assert [w[3] for w in written] == [p.kind for p in pieces]
    assert all(abs(w[2] - p.score) < 1e-6 for w, p in zip(written, pieces))
    trainer = dict(_fields(next(v for n, v in fields if n == 2)))
    assert trainer[3] == spm.BPE and trainer[4] == len(pieces) and trainer[35] == 1
    assert (trainer[40], trainer[41]) == (0, 1) and trainer[43] == (1 << 64) - 1  # pad: -1
    normalizer = dict(_fields(next(v for n, v in fields if n == 3)))
    assert normalizer[1] == b"identity" and normalizer[3] == 1 and normalizer[5] == 1


def test_what_cannot_become_a_sentencepiece_model_says_why():
    byte_level = {"model": {"type": "BPE", "byte_fallback": False, "vocab": {}, "merges": []}}
    assert "byte fallback" in spm.pieces_from_tokenizer_json(byte_level)
    no_bytes = _tokenizer_json({"<unk>": 0, "a": 1}, [])
    assert "256 byte pieces" in spm.pieces_from_tokenizer_json(no_bytes)
    splitting = {**_small(), "pre_tokenizer": {"type": "Metaspace", "split": True}}
    assert "splits words" in spm.pieces_from_tokenizer_json(splitting)
    metaspace = {
        **_small(),
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "prepend_scheme": "first", "split": False},
    }
    assert spm.pieces_from_tokenizer_json(metaspace)[1] is True
