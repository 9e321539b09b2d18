"""`f1 dataset stats | verify | convert | show | compact | upgrade | merge`: options only; each verb's work is a
`main` in its own module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(no_args_is_help=True)

# The same default as `f1 collect --out`, so the quick start's commands need no path.
DEFAULT_STORE = "shards"
StoreArg = Annotated[str, typer.Argument(help="Store: a directory or s3://bucket/prefix (holds manifest.json).")]


@app.command()
def stats(
    store: StoreArg = DEFAULT_STORE,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    sample_images: Annotated[
        int, typer.Option("--sample-images", "--sample_images", min=1, help="Frames decoded for image statistics.")
    ] = 256,
    write_normalizer: Annotated[
        bool, typer.Option("--write-normalizer/--no-write-normalizer", help="Write normalizer.json into the store.")
    ] = True,
) -> None:
    """Episodes, steps, bytes, compression, lengths, per-dim action/state stats, image stats."""
    from f1.datasets.stats import main

    main(store, as_json=json_, sample_images=sample_images, write_normalizer=write_normalizer)


@app.command()
def verify(store: StoreArg = DEFAULT_STORE) -> None:
    """Check every shard against the store's listing, the schema and the episode markers; exit 1 on any problem."""
    from f1.datasets.verify import main

    raise typer.Exit(main(store))


@app.command()
def convert(
    src: Annotated[str, typer.Argument(help="Source: a store (a directory or s3://bucket/prefix) or a LeRobot v3.0 dataset folder.")],
    dst: Annotated[str, typer.Argument(help="Destination (must not exist): a store, or a folder for --format lerobot.")],
    format: Annotated[str, typer.Option("--format", help="Destination format: zarr, webdataset or lerobot.")],
    image_codec: Annotated[
        Optional[str], typer.Option("--image-codec", "--image_codec", help="Lossless image codec (default: the source's).")
    ] = None,
    lossless: Annotated[
        bool, typer.Option("--lossless", help="lerobot: H.264 RGB at qp 0 (bit-exact frames) instead of LeRobot's AV1.")
    ] = False,
    keep_last: Annotated[
        bool, typer.Option("--keep-last", "--keep_last", help="lerobot: also export each episode's last step (its action is zeros).")
    ] = False,
    task: Annotated[Optional[str], typer.Option("--task", help="lerobot: the task string (default: the store's task_name).")] = None,
    camera: Annotated[
        Optional[list[str]],
        typer.Option("--camera", help="From lerobot: SLOT=FEATURE, SLOT wrist or head (repeat; default: observation.images.<slot>)."),
    ] = None,
    state: Annotated[Optional[str], typer.Option("--state", help="From lerobot: the state feature (default observation.state).")] = None,
    action: Annotated[Optional[str], typer.Option("--action", help="From lerobot: the action feature (default action).")] = None,
    image_size: Annotated[
        Optional[int], typer.Option("--image-size", "--image_size", min=1, help="From lerobot: resize frames to this square size.")
    ] = None,
) -> None:
    """Copy a store into the other format bit-exactly, export it as a LeRobot dataset, or import one."""
    from f1.datasets.convert import route

    route(
        src, dst, format, image_codec=image_codec, lossless=lossless, keep_last=keep_last, task=task,
        camera=camera, state=state, action=action, image_size=image_size,
    )


@app.command()
def show(
    episode: Annotated[str, typer.Option("--episode", help="Episode id (see `f1 dataset stats`), or an index.")],
    store: StoreArg = DEFAULT_STORE,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output .mp4 or .png (default: <episode>.mp4).")] = None,
) -> None:
    """Write an episode as an mp4 (head | wrist, with the step number) or a PNG contact sheet."""
    from f1.datasets.show import main

    main(store, episode, out)


@app.command()
def compact(
    store: StoreArg = DEFAULT_STORE,
    retention_minutes: Annotated[
        float,
        typer.Option(
            "--retention-minutes", "--retention_minutes", min=0.0,
            help="Keep folded records, old checkpoints and merged-away index parts this long (readers opening meanwhile need them).",
        ),
    ] = 15.0,
) -> None:
    """Fold the store's commit records into a new checkpoint (format 3); `f1 collect` does it too."""
    from f1.datasets.compact import main

    main(store, retention_minutes)


@app.command()
def upgrade(store: StoreArg = DEFAULT_STORE) -> None:
    """Turn a format-1 or -2 store into format 3, in place and crash-safe."""
    from f1.datasets.upgrade import main

    main(store)


@app.command()
def merge(
    sources: Annotated[list[str], typer.Argument(help="Stores to join (directories or s3://bucket/prefix).")],
    out: Annotated[str, typer.Option("--out", help="The merged store (new; a directory or s3://bucket/prefix).")],
) -> None:
    """Join stores of one format and spec into a new store; shards are hard-linked where possible."""
    from f1.datasets.merge import main

    main(sources, out)
