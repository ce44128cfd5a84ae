"""Symbols spread evenly over the trade stream's partitions (``partition_of``): over
symbol names of the shape exchanges list (real base and quote assets, combined), and over
families of names that differ in one character, which CRC-32 put all in one partition."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikewatch.bus.subjects import partition_of


def _words(text: str) -> list[str]:
    return text.split()


#: base assets listed on Binance (spot and USD-M), as of 2024
BASES = _words(
    """
BTC ETH BNB SOL XRP ADA DOGE TRX TON AVAX SHIB DOT LINK BCH NEAR MATIC LTC ICP UNI LEO
DAI APT ETC STX FIL ATOM IMX ARB HBAR XLM OP MKR INJ VET GRT RNDR TAO SUI LDO FET RUNE
ALGO SEI FLOW QNT AAVE EGLD THETA AXS SAND MANA KAS BSV CHZ XTZ EOS NEO KCS GALA FTM
MINA SNX IOTA ZEC KAVA CAKE CFX WOO XEC GMX DYDX CRV ROSE LUNC ENS BTT PEPE WIF BONK
FLOKI JUP PYTH TIA STRK ORDI SATS WLD BLUR MEME ACE NFP AI XAI MANTA ALT JTO PIXEL
PORTAL AEVO ETHFI ENA OMNI REZ BB NOT IO ZK ZRO LISTA BANANA RENDER TURBO HMSTR CATI
EIGEN SCR COS CTSI DENT DGB DUSK ENJ FIO FIS FLM FORTH FRONT FXS GAS GLM GLMR GTC HARD
HIFI HIGH HOOK HOT ICX IDEX ILV IOST IOTX IQ JASMY JOE KDA KEY KLAY KMD KNC KSM LINA LIT
LOKA LOOM LPT LQTY LRC LSK MAGIC MASK MAV MBL MDT MDX MLN MOB MOVR MTL MULTI NKN NMR
NULS OAX OCEAN OG OGN OM ONE ONG ONT OOKI ORN OSMO OXT PAXG PENDLE PERP PHA PHB POLS
POLYX POND POWR PROM PROS PSG PUNDIX PYR QI QKC QUICK RAD RARE RAY RDNT REEF REI REN REQ
RIF RLC RPL RSR RVN SANTOS SC SCRT SFP SKL SLP SNT SPELL SSV STEEM STG STMX STORJ STPT
SUN SUPER SUSHI SXP SYN SYS T TFUEL TKO TLM TRB TRU TWT UMA UNFI USTC UTK VANRY VIB VIC
VIDT VITE VOXEL VTHO WAN WAXP WIN WING WNXM WRX XEM XNO XVG XVS YFI YGG ZEN ZIL ZRX
1INCH 1000SATS ACH ADX AERGO AGLD ALCX ALICE ALPACA ALPHA AMB AMP ANKR ANT API3 AR ARDR
ARK ARKM ARPA ASTR ATA AUCTION AUDIO AVA BADGER BAKE BAL BAND BAR BAT BEL BETA BICO BIFI
BLZ BNT BNX BOND BSW BURGER C98 CELO CELR CHESS CHR CITY CKB CLV COMBO COMP COTI CREAM
CTK CTXC CVC CVP CVX CYBER DAR DASH DATA DCR DEGO DEXE DF DIA DOCK DODO DREP EDU ELF EPX
ERN FARM FIDA FOR
"""
)
#: quote assets of Binance's spot and USD-M listings
QUOTES = _words("USDT USDC FDUSD BTC ETH BNB TRY EUR BRL JPY TUSD DAI")


def _names() -> list[str]:
    return [f"{b}{q}" for b in BASES for q in QUOTES if b != q]


def _counts(exchange: str, symbols: list[str], partitions: int) -> Counter[int]:
    return Counter(partition_of(exchange, s, partitions) for s in symbols)


def _within(counts: Counter[int], total: int, partitions: int, sigmas: float) -> None:
    """Every partition holds ``total / partitions`` names give or take ``sigmas`` standard
    deviations of a uniform hash's count (binomial: sqrt(total x p x (1 - p)))."""
    p = 1 / partitions
    mean, sd = total * p, math.sqrt(total * p * (1 - p))
    assert set(counts) == set(range(partitions)), counts
    assert max(counts.values()) <= mean + sigmas * sd, (mean, sd, counts)
    assert min(counts.values()) >= mean - sigmas * sd, (mean, sd, counts)


@pytest.mark.parametrize("exchange", ["binance", "binance-usdm"])
@pytest.mark.parametrize("partitions", [2, 4, 8, 16])
def test_listed_names_are_balanced_as_a_uniform_hash_would_be(
    exchange: str, partitions: int
) -> None:
    # the bound: 4 standard deviations; for 2,000+ names on 8 partitions that is +-22 %
    # of the mean (CRC-32 of the names below stays inside it too; it fails on families)
    symbols = _names()
    assert len(symbols) >= 2000
    _within(_counts(exchange, symbols, partitions), len(symbols), partitions, 4)


def test_names_that_differ_in_one_character_do_not_share_a_partition() -> None:
    # CRC-32 put AAA0USDT .. AAA7USDT all in one partition of 8 (it is linear: one byte's
    # difference changes the same bits whatever the rest)
    assert len({partition_of("binance", f"AAA{i}USDT", 8) for i in range(8)}) > 1
    families = [[f"{b}{i}USDT" for i in range(8)] for b in BASES[:250]]
    for family in families:
        assert len({partition_of("binance", s, 8) for s in family}) >= 3, family
    _within(_counts("binance", [s for f in families for s in f], 8), 2000, 8, 4)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=2, max_size=8),
        min_size=800,
        max_size=800,
        unique=True,
    )
)
def test_any_800_names_fill_every_one_of_8_partitions_within_50_percent(
    bases: list[str],
) -> None:
    # 100 a partition on average; a uniform hash's spread is 9.4: 50 % is over 5 of those
    counts = _counts("binance", [f"{b}USDT" for b in bases], 8)
    assert set(counts) == set(range(8))
    assert max(counts.values()) <= 150, counts
    assert min(counts.values()) >= 50, counts
