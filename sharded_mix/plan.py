"""The mixture plan: one row per source, as data (for notebooks) and as a greppable table (for logs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from sharded_mix.discovery import Shard


@dataclass(frozen=True)
class PlanRow:
    id: str
    type: str
    tokens: int
    weight: float
    blocks: int
    path: str


def mixture_rows(shards: Sequence[Shard], weights: Mapping[str, float], block_size: int) -> list[PlanRow]:
    """One row per discovered shard; shards left out of the blend have weight 0."""
    return [
        PlanRow(shard.id, shard.type, shard.tokens, weights.get(shard.id, 0.0), shard.blocks(block_size), shard.path)
        for shard in shards
    ]


def rows_as_dicts(rows: Sequence[PlanRow]) -> list[dict]:
    return [asdict(row) for row in rows]


def format_mixture_plan(rows: Sequence[PlanRow], title: str, details: str = "") -> str:
    """A fixed-format table headed ``DATA MIXTURE PLAN``."""
    header = f"{'source':<14} {'type':<10} {'tokens':>14} {'blocks':>10} {'weight':>8}"
    lines = [f"===== DATA MIXTURE PLAN: {title} =====", *([details] if details else []), header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row.id:<14} {row.type:<10} {row.tokens:>14,} {row.blocks:>10,} {row.weight:>8.4f}")
    used = [row for row in rows if row.weight > 0]
    lines.append("-" * len(header))
    lines.append(
        f"{len(used)} of {len(rows)} sources in the blend, {sum(row.tokens for row in used):,} tokens; "
        f"weight 0 = excluded"
    )
    return "\n".join(lines)
