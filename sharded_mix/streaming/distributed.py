"""Where this process sits in the training job: rank, world, nodes; and work done once for all ranks."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only

T = TypeVar("T")
logger = logging.getLogger(__name__)

NODE_RANK_VARIABLES = ("NODE_RANK", "GROUP_RANK", "SLURM_NODEID")
"""Set by Lightning, torchrun and SLURM: the node of this process, to check that ranks are numbered node by node."""


def log_rank_zero(message: str, *args) -> None:
    """An INFO line from global rank zero only (plans, transitions)."""
    if rank_zero_only.rank == 0:
        logger.info(message, *args)


def distributed_rank_world() -> tuple[int, int]:
    """This process's rank and the world size (torch.distributed if initialised, else the environment)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def launcher_nodes(world_size: int, fabric_nodes: int | None = None) -> tuple[int, str]:
    """How many nodes the job spans and where that was read: LitGPT's Fabric (``--num_nodes``), SLURM's allocation
    when its tasks are the ranks, torchrun's ``LOCAL_WORLD_SIZE``; else one node."""
    if fabric_nodes:
        return fabric_nodes, "the Fabric of the LitGPT command (num_nodes)"
    env = os.environ
    tasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS")
    slurm_nodes = env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")
    if slurm_nodes and tasks and int(tasks) == world_size:
        return int(slurm_nodes), "SLURM (the job step's nodes)"
    local = env.get("LOCAL_WORLD_SIZE")
    if local and int(local) > 0 and world_size % int(local) == 0:
        return world_size // int(local), "WORLD_SIZE / LOCAL_WORLD_SIZE"
    return 1, "the default (no launcher names more)"


def check_node_layout(rank: int, world_size: int, nodes: int) -> None:
    """Refuse a layout whose ranks are not numbered node by node (each node must read its own slices)."""
    if world_size % nodes:
        raise ValueError(
            f"nodes is {nodes} but the job has {world_size} rank(s): set nodes to the number of nodes, each running "
            "the same number of ranks."
        )
    per_node = world_size // nodes
    for name in NODE_RANK_VARIABLES:
        value = os.environ.get(name)
        if value is not None and value.isdigit() and nodes > 1 and int(value) != rank // per_node:
            raise ValueError(
                f"rank {rank} runs on node {value} ({name}), but with {nodes} nodes of {per_node} ranks it should be "
                f"on node {rank // per_node}: the launcher does not number ranks node by node. Set nodes to the number "
                "of nodes it uses, or launch with consecutive ranks per node (Lightning, torchrun and srun do)."
            )


def from_rank_zero(compute: Callable[[], T]) -> T:
    """``compute()`` run by global rank zero and sent to every rank: one listing of a base for the whole job, not
    one per rank. An error there is raised on every rank, with its message."""
    if (
        not (torch.distributed.is_available() and torch.distributed.is_initialized())
        or torch.distributed.get_world_size() == 1
    ):
        return compute()
    box: list = [None]
    failure = None
    if torch.distributed.get_rank() == 0:
        try:
            box = [("result", compute())]
        except Exception as err:  # every rank must leave the broadcast, whatever went wrong
            failure = err
            box = [
                (
                    "error",
                    f"{type(err).__name__}: {err}" if not isinstance(err, ValueError) else str(err),
                    isinstance(err, ValueError),
                )
            ]
    torch.distributed.broadcast_object_list(box, src=0)
    if failure is not None:
        raise failure
    if box[0][0] == "error":
        _, message, is_value_error = box[0]
        raise (ValueError if is_value_error else RuntimeError)(f"{message} (raised on rank 0)")
    return box[0][1]


def run_nodes(nodes_field: int | None, fabric_nodes: int | None, rank: int, world_size: int) -> int:
    """The nodes of the run: the data module's ``nodes`` field, else the launcher's; checked against the ranks."""
    if nodes_field is not None:
        nodes, origin = nodes_field, "the nodes field"
    else:
        nodes, origin = launcher_nodes(world_size, fabric_nodes)
    check_node_layout(rank, world_size, nodes)
    if nodes > 1:
        log_rank_zero("%d nodes (from %s): each reads its own slice of every epoch of every source", nodes, origin)
    return nodes
