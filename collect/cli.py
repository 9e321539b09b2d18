"""`f1 collect`: options only. The work is `f1.collect.collector.main`, imported when the command runs,
so this parent process never imports SAPIEN or torch (DESIGN.md section 6)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from f1.shared.cli_options import ConfigOpt, GpusOpt, SetOpt, StepsPerEpisodeOpt, build_config


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
    policy: Annotated[Optional[str], typer.Option("--policy", help="Exploration policy: random or ou.")] = None,
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
    from f1.collect.assets import panda_urdf_path
    from f1.collect.collector import main

    panda_urdf_path(cfg.environment.robot_assets_dir)  # a bad assets folder: one line here, not a traceback per worker
    raise typer.Exit(main(cfg, out))
