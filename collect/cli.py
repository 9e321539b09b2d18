"""`f1 collect`: options only. The work is `f1.collect.collector.main`, imported when the command runs,
so this parent process never imports SAPIEN or torch (DESIGN.md section 6). Without --node-rank/--num-nodes
the ranks come from Slurm or torchrun-style variables (`f1.collect.ranks`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from f1.collect.ranks import resolve_node_ranks
from f1.shared.cli_options import ConfigOpt, GpusOpt, SetOpt, StepsPerEpisodeOpt, build_config
from f1.shared.errors import UserError

BACKENDS = ("multiprocessing", "ray")


def collect(
    out: Annotated[
        str, typer.Option("--out", help="Store: a directory or s3://bucket/prefix (created, or resumed if it exists).")
    ] = "shards",
    gpus: GpusOpt = None,
    envs: Annotated[Optional[int], typer.Option("--envs", min=1, help="Envs per worker.")] = None,
    episodes: Annotated[
        Optional[int], typer.Option("--episodes", "--num-episodes", "--num_episodes", min=1, help="Total episodes for the run.")
    ] = None,
    steps_per_episode: StepsPerEpisodeOpt = None,
    format: Annotated[Optional[str], typer.Option("--format", help="Store format: zarr or webdataset.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Base seed.")] = None,
    policy: Annotated[Optional[str], typer.Option("--policy", help="Exploration policy: random, ou or lookaway (scripted look-away-and-back, for memory evaluation).")] = None,
    episodes_per_shard: Annotated[
        Optional[int], typer.Option("--episodes-per-shard", "--episodes_per_shard", min=1, help="Episodes per shard.")
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option("--workers", min=1, help="CPU worker processes when --gpus 0 (default: cores).")
    ] = None,
    image_size: Annotated[
        Optional[int], typer.Option("--image-size", "--image_size", min=16, help="Square camera size in pixels.")
    ] = None,
    node_rank: Annotated[
        Optional[int], typer.Option("--node-rank", "--node_rank", min=0, help="This machine's index (multi-node).")
    ] = None,
    num_nodes: Annotated[
        Optional[int], typer.Option("--num-nodes", "--num_nodes", min=1, help="Machines writing one store.")
    ] = None,
    backend: Annotated[
        str, typer.Option("--backend", help="Who runs the workers: multiprocessing (this machine) or ray.")
    ] = "multiprocessing",
    ray_address: Annotated[
        Optional[str],
        typer.Option("--ray-address", "--ray_address", help="A Ray cluster to run on (default: a local Ray instance)."),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    cfg = build_config(
        config,
        set_,
        collect__gpus=gpus,
        collect__envs=envs,
        collect__episodes=episodes,
        training__steps_per_episode=steps_per_episode,
        collect__format=format,
        collect__seed=seed,
        collect__policy=policy,
        collect__episodes_per_shard=episodes_per_shard,
        collect__workers=workers,
        environment__image_size=[image_size, image_size] if image_size else None,
        collect__node_rank=node_rank,
        collect__num_nodes=num_nodes,
    )
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}; use --backend ray or leave it out")
    if ray_address is not None and backend != "ray":
        raise UserError(f"--ray-address {ray_address} needs --backend ray; add it, or drop --ray-address")
    ranks = resolve_node_ranks(node_rank, num_nodes, cfg.collect.node_rank, cfg.collect.num_nodes)
    if ranks is not None:  # checked in f1.collect.ranks as the config checks the flags
        cfg.collect.node_rank, cfg.collect.num_nodes = ranks.rank, ranks.count
    from f1.collect.assets import panda_urdf_path
    from f1.collect.collector import main

    panda_urdf_path(cfg.environment.robot_assets_dir)  # a bad assets folder: one line here, not a traceback per worker
    raise typer.Exit(main(cfg, out, backend=backend, ray_address=ray_address, ranks=ranks))
