"""A SentencePiece `tokenizer.model` for a copy whose release ships one, written from the copy's
tokenizer.json. Standard library only.

Releases of SentencePiece families (Gemma, Gemma 2, Phi-3, ERNIE 4.5, Llama 2, Mistral) ship a
`tokenizer.model` beside tokenizer.json, and some converters read only that (llama.cpp's for
Gemma, Gemma 2, Phi-3 and ERNIE 4.5 refuse a directory without one). Its weights-sized copy is
not catalogued (a Git LFS file), so the copy gets one written from its own tokenizer.json: the
pieces in id order, each merged piece scored by the rank of the first merge that makes it (how
SentencePiece's BPE chooses, and how transformers' converter ordered the merges it wrote). The
model is kept only when the SentencePiece algorithm gives the tokenizer.json's ids on every
check text (`encode`), so a copy never reads differently in two engines because of us.

The file is a protobuf `ModelProto` (sentencepiece_model.proto); the few fields a BPE model with
byte fallback needs are written here directly, since the environment that builds copies (the
reference transformers) does not carry the protobuf and sentencepiece packages.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SPACE = "\u2581"
# SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
BPE = 2  # TrainerSpec.ModelType
BYTE_PIECES = tuple(f"<0x{b:02X}>" for b in range(256))


@dataclass(frozen=True)
class Piece:
    text: str
    score: float
    kind: int


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # negative ids (pad_id -1) are written as 64-bit two's complement
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _int(number: int, value: int) -> bytes:
    return _field(number, 0) + _varint(value)


def _bytes(number: int, value: bytes) -> bytes:
    return _field(number, 2) + _varint(len(value)) + value


def _float(number: int, value: float) -> bytes:
    return _field(number, 5) + struct.pack("<f", value)


def model_bytes(pieces: list[Piece], *, dummy_prefix: bool, roles: dict[str, str]) -> bytes:
    """A serialized ModelProto: BPE with byte fallback, whitespace escaped as U+2581, no other
    normalization (tokenizer.json's Replace / Prepend normalizers), special pieces by role."""
    index = {p.text: i for i, p in enumerate(pieces)}
    out = bytearray()
    for p in pieces:
        out += _bytes(1, _bytes(1, p.text.encode("utf-8")) + _float(2, p.score) + _int(3, p.kind))
    trainer = _int(3, BPE) + _int(4, len(pieces)) + _int(35, 1)  # model_type, vocab_size, byte_fallback
    for number, role in ((40, "unk"), (41, "bos"), (42, "eos"), (43, "pad")):
        text = roles.get(role)
        trainer += _int(number, index[text] if text in index else -1)
    for number, role in ((45, "unk"), (46, "bos"), (47, "eos"), (48, "pad")):
        if roles.get(role):
            trainer += _bytes(number, roles[role].encode("utf-8"))
    out += _bytes(2, trainer)
    normalizer = _bytes(1, b"identity") + _int(3, int(dummy_prefix)) + _int(4, 0) + _int(5, 1)
    out += _bytes(3, normalizer)
    return bytes(out)


def _merge_pairs(merges: Iterable[Any]) -> list[tuple[str, str]]:
    return [
        tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1])  # type: ignore[misc]
        for m in merges
    ]


def complete_merges(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """Every split of every piece into two pieces, best-scored result first: the merges a
    SentencePiece BPE model implies (a pair merges whenever its concatenation is a piece)."""
    found = []
    for piece, score in scores.items():
        splits = [
            (piece[:i], piece[i:]) for i in range(1, len(piece)) if piece[:i] in vocab and piece[i:] in vocab
        ]
        found += [(-score, vocab[left], vocab[right], left, right) for left, right in splits]
    return [(left, right) for *_key, left, right in sorted(found)]


def pieces_from_tokenizer_json(data: dict[str, Any]) -> tuple[list[Piece], bool] | str:
    """(pieces in id order, dummy prefix) from a BPE tokenizer.json with byte fallback, or why
    not. A merged piece scores minus the rank of the first merge making it; bytes, specials and
    single characters score 0 (SentencePiece's BPE compares only merged pieces' scores)."""
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        return "not a BPE tokenizer.json with byte fallback"
    vocab: dict[str, int] = dict(model.get("vocab") or {})
    added = {t["id"]: t for t in data.get("added_tokens") or []}
    size = max([*vocab.values(), *added, -1]) + 1
    texts: list[str | None] = [None] * size
    for text, i in vocab.items():
        texts[i] = text
    for i, token in added.items():
        texts[i] = token["content"]
    if any(t is None for t in texts):
        return "tokenizer.json ids have gaps"
    rank: dict[str, int] = {}
    for r, (left, right) in enumerate(_merge_pairs(model.get("merges") or [])):
        rank.setdefault(left + right, r)
    unk = model.get("unk_token")
    pieces = []
    for i, text in enumerate(texts):
        assert text is not None
        if i in added:
            kind = UNKNOWN if text == unk else CONTROL if added[i].get("special") else USER_DEFINED
        else:
            kind = UNKNOWN if text == unk else BYTE if text in BYTE_PIECES else NORMAL
        score = -float(rank[text]) if kind == NORMAL and text in rank else 0.0
        pieces.append(Piece(text, score, kind))
    if not any(p.kind == UNKNOWN for p in pieces):
        return "no unknown token"
    if sum(p.kind == BYTE for p in pieces) != len(BYTE_PIECES):
        return "not all 256 byte pieces"
    pre = data.get("pre_tokenizer")
    if isinstance(pre, dict) and pre.get("type") == "Metaspace" and pre.get("split", True):
        return "a Metaspace pre-tokenizer that splits words (SentencePiece does not)"
    return pieces, _prepends_space(data.get("normalizer")) or _metaspace_prefix(pre)


def _prepends_space(normalizer: Any) -> bool:
    if not isinstance(normalizer, dict):
        return False
    if normalizer.get("type") == "Prepend":
        return normalizer.get("prepend") == SPACE
    return any(_prepends_space(n) for n in normalizer.get("normalizers") or [])


def _metaspace_prefix(pre: Any) -> bool:
    """A Metaspace pre-tokenizer (newer tokenizer.json files of SentencePiece models) that
    prepends U+2581 to the text: SentencePiece's dummy prefix."""
    if not isinstance(pre, dict) or pre.get("type") != "Metaspace":
        return False
    return pre.get("prepend_scheme", "always" if pre.get("add_prefix_space") else "never") in (
        "first",
        "always",
    )


def encode(text: str, pieces: list[Piece], *, dummy_prefix: bool) -> list[int]:
    """SentencePiece's BPE (as llama.cpp's SPM tokenizer runs it): escape spaces, then merge the
    adjacent pair whose concatenation is the best-scored normal piece (leftmost on ties) until
    none is; symbols that are not pieces fall back to their UTF-8 bytes."""
    ids = {p.text: i for i, p in enumerate(pieces) if p.kind in (NORMAL, UNKNOWN, BYTE)}
    scores = {p.text: p.score for p in pieces if p.kind == NORMAL}
    text = text.replace(" ", SPACE)
    symbols = list(SPACE + text if dummy_prefix else text)
    while len(symbols) > 1:
        best = None
        for i in range(len(symbols) - 1):
            merged = symbols[i] + symbols[i + 1]
            if merged in scores and (best is None or scores[merged] > best[0]):
                best = (scores[merged], i)
        if best is None:
            break
        i = best[1]
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    out: list[int] = []
    for s in symbols:
        out += [ids[s]] if s in ids else [ids[f"<0x{b:02X}>"] for b in s.encode("utf-8")]
    return out
