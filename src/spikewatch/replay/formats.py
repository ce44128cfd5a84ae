"""Which trade file is which: the format of a file (from its first line) and the symbol
in its name (see :mod:`spikewatch.replay.readers` for the formats)."""

from __future__ import annotations

import codecs
import itertools
from pathlib import Path
from typing import Final

from spikewatch.core.model import Side
from spikewatch.replay.files import open_binary, read_head, zip_member

FORMATS: Final = ("trades", "aggtrades", "frames")

_QUOTES: Final = ("USDT", "USDC", "BUSD", "FDUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")
_NAME_MARKERS: Final = ("trades", "aggTrades", "aggtrades", "trade")

_SELL, _BUY = Side.SELL, Side.BUY
# The side column, also as the last field of a line: "\n" is split off, "\r" (CRLF files)
# is not, so those spellings are looked up too instead of stripping every line.
SIDES: Final[dict[str, Side]] = {
    f"{word}{end}": side
    for words, side in ((("True", "true", "TRUE"), _SELL), (("False", "false", "FALSE"), _BUY))
    for word in words
    for end in ("", "\r")
}
#: The same spellings -> buyer_is_maker (1: the taker sold).
MAKER: Final[dict[str, int]] = {word: int(side is _SELL) for word, side in SIDES.items()}


def detect_format(path: str | Path) -> str:
    """The format of a trade file, ``"trades"``, ``"aggtrades"`` or ``"frames"``.

    Decided by the first line (a header, or the shape of the first row); the file name
    decides only for an empty file. Raises ValueError naming the file if it cannot tell.
    """
    path = Path(path)
    with open_binary(path) as handle:
        head = read_head(path, handle)
    _refuse_binary(path, head)
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace").lstrip("\ufeff").strip()
    if not first:
        hinted = _format_from_name(path.name)
        if hinted is None:
            raise ValueError(f"{path}: the file is empty; cannot tell its format")
        return hinted
    kind = _format_of_line(first)
    if kind is None:
        raise ValueError(
            f"{path}: not a Binance trades, aggTrades or frames file "
            f"(first line: {first[:80]!r}); pass the format if it is one"
        )
    return kind


def check_text(path: Path) -> None:
    """Raise ValueError when ``path`` cannot be a trade file of any format (binary)."""
    with open_binary(path) as handle:
        _refuse_binary(path, read_head(path, handle))


_GZIP_MAGIC: Final = b"\x1f\x8b"
_ZIP_MAGIC: Final = b"PK\x03\x04"
#: Control characters that no text trade file holds (tab, newline and return aside).
_CONTROL: Final = bytes(c for c in range(32) if c not in (9, 10, 13)) + b"\x7f"


def _refuse_binary(path: Path, head: bytes) -> None:
    """Raise ValueError naming the fix when the (decompressed) ``head`` of ``path`` is
    not text: a compressed file without its suffix, or not a trade file at all. The
    message never quotes the bytes."""
    if head.startswith(_GZIP_MAGIC):
        raise ValueError(f"{path}: gzip-compressed, but not named .gz: rename it {path.name}.gz")
    if head.startswith(_ZIP_MAGIC):
        raise ValueError(f"{path}: a zip archive, but not named .zip: rename it {path.name}.zip")
    sample = head[:4096]
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        binary = any(c in _CONTROL for c in sample)
    except UnicodeDecodeError:
        binary = True
    if binary:
        raise ValueError(
            f"{path}: not a text file; replay reads trade CSVs and JSON-lines frame "
            "recordings (plain, .gz or .zip)"
        )


def symbol_from_filename(path: str | Path) -> str | None:
    """The symbol in a data.binance.vision-style file name (``BTCUSDT-trades-...``), or None."""
    name = Path(path).name
    tokens = name.replace("_", "-").replace(".", "-").split("-")
    # The canonical layout: the token right before "-trades" / "-aggTrades".
    for before, token in itertools.pairwise(tokens):
        if token in _NAME_MARKERS and _is_symbol(before):
            return before
    # Otherwise the first all-caps token that ends in a common quote asset.
    for token in tokens:
        if len(token) >= 5 and _is_symbol(token) and token.endswith(_QUOTES):
            return token
    return None


# -- detection helpers ---------------------------------------------------------------


def _is_symbol(token: str) -> bool:
    return token.isascii() and token.isalnum() and token.isupper()


def clean_symbol(symbol: str) -> str:
    cleaned = symbol.strip().upper()
    if not (cleaned.isascii() and cleaned.isalnum()):
        raise ValueError(f"not a symbol: {symbol!r} (expected letters and digits, e.g. BTCUSDT)")
    return cleaned


def _format_from_name(name: str) -> str | None:
    lowered = name.lower()
    if "aggtrades" in lowered:
        return "aggtrades"
    if ".jsonl" in lowered or "trade-msgs" in lowered:
        return "frames"
    if "trades" in lowered:
        return "trades"
    return None


def _is_bool(text: str) -> bool:
    return text.strip() in SIDES


def _format_of_line(line: str) -> str | None:
    if line.startswith("{"):
        return "frames"
    stamp, _, rest = line.partition(" ")
    if stamp.isdigit() and rest.lstrip().startswith("{"):  # "<recv_ns> <frame>"
        return "frames"
    fields = [f.strip() for f in line.split(",")]
    if is_header(fields[0]):
        names = [f.lower() for f in fields]
        if "agg_trade_id" in names or "first_trade_id" in names:
            return "aggtrades"
        if names[:3] == ["id", "price", "qty"]:
            return "trades"
        return None
    width = len(fields)
    if width == 6 and _is_bool(fields[5]):
        return "trades"
    if width == 7 and _is_bool(fields[5]) and _is_bool(fields[6]):
        return "trades"  # spot, with is_best_match
    if width == 7 and fields[5].isdigit() and _is_bool(fields[6]):
        return "aggtrades"  # futures, no is_best_match
    if width == 8 and fields[5].isdigit() and _is_bool(fields[6]):
        return "aggtrades"
    return None


def is_header(first_field: str) -> bool:
    return first_field.replace("_", "").isalpha()


def symbol_from_zip_member(path: Path) -> str | None:
    if path.suffix.lower() != ".zip":
        return None
    with zip_member(path) as (_, member):
        return symbol_from_filename(member)
