"""Persistent rank pools: N processes in a process group, fed examples by the driver."""

from kdist_props.cluster.errors import RankCrash, RankDesync, RankError, RankFailure, RankHang
from kdist_props.cluster.pool import Pool, PoolManager

__all__ = [
    "Pool",
    "PoolManager",
    "RankCrash",
    "RankDesync",
    "RankError",
    "RankFailure",
    "RankHang",
]
