"""Contact sheet of the scene: head and wrist frames from short OU exploration episodes.

    .venv/bin/python scripts/make_contact_sheet.py [--out docs/scene_contact_sheet.png] [--episodes 2]

Each episode gives two rows (head, wrist), one column every `--every` steps,
each from its own scene seed, so the sheet also shows the domain randomisation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from f1.collect.env import F1RLEnv
from f1.collect.policies import OUPolicy
from f1.shared.config import load_config

GAP = 4  # pixels between tiles


def episode_frames(env: F1RLEnv, seed: int, steps: int, every: int) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    policy = OUPolicy(env.action_dim, seed=seed)
    obs, _ = env.reset(seed=seed, options={"scene_seed": 1000 + seed})
    heads, wrists, shown = [obs["head_rgb"]], [obs["wrist_rgb"]], [0]
    for t in range(1, steps + 1):
        obs, *_ = env.step(policy.act())
        if t % every == 0:
            heads.append(obs["head_rgb"])
            wrists.append(obs["wrist_rgb"])
            shown.append(t)
    return heads, wrists, shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/scene_contact_sheet.png"))
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()

    cfg = load_config(overrides=[f"environment.image_size=[{args.size},{args.size}]", f"training.steps_per_episode={args.steps}"])
    env = F1RLEnv(cfg)
    rows, labels = [], []
    for episode in range(args.episodes):
        heads, wrists, shown = episode_frames(env, seed=episode, steps=args.steps, every=args.every)
        rows += [heads, wrists]
        labels += [f"episode {episode} head", f"episode {episode} wrist"]
    env.close()

    tile = args.size + GAP
    label_h = 12
    sheet = Image.new("RGB", (len(rows[0]) * tile + GAP, len(rows) * (tile + label_h) + GAP), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (row, label) in enumerate(zip(rows, labels)):
        y = GAP + r * (tile + label_h)
        draw.text((GAP, y), label, fill=(0, 0, 0))
        for c, (frame, t) in enumerate(zip(row, shown)):
            x = GAP + c * tile
            sheet.paste(Image.fromarray(frame), (x, y + label_h))
            draw.text((x + args.size - 30, y), f"t={t}", fill=(90, 90, 90))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
