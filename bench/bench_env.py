"""Env speed: F1RLEnv against bare SAPIEN on the same scene, and two ways to step M envs in one process.

    .venv/bin/python bench/bench_env.py [--size 128] [--steps 50] [--rounds 7] [--envs 2 4] [--no-append]

- first render: the first scene and picture of the process (Vulkan start-up and
  shader compilation), then a later scene's build and first picture;
- bare SAPIEN (the baseline): a second copy of the same scene, no wrapper: per
  step, set the 9 joint drive targets, step the physics substeps, render both
  cameras, read both pictures as uint8. It replays the drive targets the env
  produced, from the same start, so both simulate and draw the same motion
  (render cost depends on what is in view);
- F1RLEnv.step with OU actions: the same work plus the action mapping, state,
  histories, observation dict and info (goal: at most 10% more time than bare);
- render settings: bare SAPIEN with SAPIEN's float32 colour output (converted
  to uint8), with its default shader, and with the full robot meshes, each
  against f1's settings;
- M envs: the plain loop of f1.collect.vector against gymnasium's
  SyncVectorEnv, same actions.
The machine may be shared, so the two sides of each comparison run in
alternation, one episode each per round, and the figures are medians over
rounds. The table is printed and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from results import load_average, machine, report

SCENE_SEED, EPISODE_SEED = 12345, 1


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="square image size")
    parser.add_argument("--steps", type=int, default=50, help="control steps per episode (per env)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per comparison (median kept)")
    parser.add_argument("--envs", type=int, nargs="+", default=[2, 4], help="vector sizes M")
    parser.add_argument("--no-append", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args()

    import gymnasium as gym
    import sapien

    from f1.collect.env import F1RLEnv
    from f1.collect.policies import OUPolicy
    from f1.collect.randomization import sample_episode, sample_scene
    from f1.collect.rendering import CAMERA_SHADER, COLOR_FORMAT, COLOR_PICTURE
    from f1.collect.scene import TabletopScene
    from f1.collect.vector import make_vector_env
    from f1.shared.config import load_config

    size, steps = args.size, args.steps
    cfg = load_config(overrides=[f"environment.image_size=[{size},{size}]", f"training.steps_per_episode={steps}"])
    rows: list[tuple[str, str, str]] = []
    options = {"scene_seed": SCENE_SEED}

    # ---------------------------------------------------------------- first render
    env = F1RLEnv(cfg)
    first = timed(lambda: env.reset(seed=0))
    later = timed(lambda: env.reset(seed=EPISODE_SEED, options=options))  # a new scene: build + first picture
    rows.append(("first scene + picture in the process (Vulkan start, shader compile)", f"{first:.2f} s", ""))
    rows.append(("later scene: build + first picture", f"{later * 1000:.0f} ms", f"{first / later:.0f}x less"))

    # ---------------------------------------------------------------- one env: bare SAPIEN vs F1RLEnv
    policy = OUPolicy(cfg.training.action_dim)
    policy.reset(0)
    actions = [policy.act() for _ in range(steps)]
    targets = np.zeros((steps, 9), np.float32)  # the drive targets the env sets, replayed by bare SAPIEN
    env.reset(seed=EPISODE_SEED, options=options)
    for k, action in enumerate(actions):
        env.step(action)
        targets[k] = [joint.get_drive_target()[0] for joint in env.scene.robot.joints]

    params = sample_scene(cfg.environment.domain_randomization, SCENE_SEED)
    episode = sample_episode(params, EPISODE_SEED, cfg.environment.home_noise)
    substeps = cfg.environment.sim_substeps

    def bare_scene(meshes: str = cfg.environment.robot_meshes) -> TabletopScene:
        return TabletopScene(params, cfg.environment.image_size, ("head", "wrist"), env.timestep, meshes)

    def bare_episode(scene: TabletopScene) -> None:
        joints, cameras = scene.robot.joints, list(scene.cameras.values())
        for step_targets in targets.tolist():
            for joint, target in zip(joints, step_targets):
                joint.set_drive_target(target)
            for _ in range(substeps):
                scene.scene.step()
            scene.scene.update_render()
            for camera in cameras:
                camera.take_picture()
            for camera in cameras:
                rgba = camera.get_picture(COLOR_PICTURE)
                if rgba.dtype != np.uint8:  # SAPIEN's default float32 output, converted as a user would
                    (np.clip(rgba[..., :3], 0, 1) * 255).astype(np.uint8)

    bare = bare_scene()

    def env_episode() -> None:
        for action in actions:
            env.step(action)

    bare_s, env_s = [], []
    for _ in range(args.rounds):
        bare.place(episode)
        bare_s.append(timed(lambda: bare_episode(bare)))
        env.reset(seed=EPISODE_SEED, options=options)
        env_s.append(timed(env_episode))
    bare_rate, env_rate = steps / statistics.median(bare_s), steps / statistics.median(env_s)
    extra = statistics.median(e / b for e, b in zip(env_s, bare_s)) - 1
    rows.append(("bare SAPIEN, 2 cameras (baseline)", f"{bare_rate:.1f} steps/s", "1.00"))
    rows.append(("F1RLEnv.step, 2 cameras", f"{env_rate:.1f} steps/s", f"{env_rate / bare_rate:.2f} ({extra:+.1%} time)"))
    env.close()

    # ---------------------------------------------------------------- render settings, bare SAPIEN
    # Each setting against f1's (minimal shader, RGBA8 output, light robot meshes), alternating.
    def with_settings(shader: str, color_format: str, meshes: str) -> TabletopScene:
        sapien.render.set_camera_shader_dir(shader)  # both are read when a camera is made
        sapien.render.set_picture_format(COLOR_PICTURE, color_format)
        try:
            return bare_scene(meshes)
        finally:
            sapien.render.set_camera_shader_dir(CAMERA_SHADER)
            sapien.render.set_picture_format(COLOR_PICTURE, COLOR_FORMAT)

    variants = [
        ("SAPIEN's default float32 Color, converted to uint8", with_settings(CAMERA_SHADER, "r32g32b32a32sfloat", "light")),
        ("SAPIEN's default shader", with_settings("default", COLOR_FORMAT, "light")),
        ("full robot meshes (~150k triangles)", with_settings(CAMERA_SHADER, COLOR_FORMAT, "full")),
    ]
    for label, variant in variants:
        variant.take_pictures()  # the first pictures with a new shader compile it: not timed
        for camera in variant.cameras.values():
            camera.get_picture(COLOR_PICTURE)
        variant_s, f1_s = [], []
        for _ in range(max(args.rounds // 2, 1)):
            variant.place(episode)
            variant_s.append(timed(lambda: bare_episode(variant)))
            bare.place(episode)
            f1_s.append(timed(lambda: bare_episode(bare)))
        ratio = statistics.median(f1_s) / statistics.median(variant_s)
        rows.append((f"bare SAPIEN, {label}", f"{steps / statistics.median(variant_s):.1f} steps/s", f"{ratio:.2f}x the speed with f1's"))
    del bare, variants

    # ---------------------------------------------------------------- M envs: plain loop vs SyncVectorEnv
    for m in args.envs:
        plain = make_vector_env(cfg, m)
        sync = gym.vector.SyncVectorEnv([lambda: F1RLEnv(cfg) for _ in range(m)])
        seeds = list(range(m))
        batch = np.stack([np.stack(actions)] * m, axis=1)  # (steps, M, action_dim)
        plain_s, sync_s = [], []
        for _ in range(args.rounds):
            plain.reset(seeds=seeds, options=[options] * m)
            plain_s.append(timed(lambda: [plain.step(list(a)) for a in batch]))
            sync.reset(seed=seeds, options=options)  # the same starts (also clears its auto-reset flags)
            sync_s.append(timed(lambda: [sync.step(a) for a in batch]))
        plain_rate, sync_rate = m * steps / statistics.median(plain_s), m * steps / statistics.median(sync_s)
        rows.append((f"SyncVectorEnv, M={m} (baseline)", f"{sync_rate:.1f} env-steps/s", "1.00"))
        rows.append((f"f1 VectorEnv (plain loop), M={m}", f"{plain_rate:.1f} env-steps/s", f"{plain_rate / sync_rate:.2f}"))
        rows.append((f"f1 VectorEnv, M={m}, against bare SAPIEN (one env)", "", f"{plain_rate / bare_rate:.2f}"))
        plain.close()
        sync.close()

    setup = (
        f"machine: {machine()}; SAPIEN {sapien.__version__} rendering on "
        f"{sapien.render.get_device_summary().splitlines()[0].removeprefix('GPU: ')}; {size}x{size} head + wrist, "
        f"robot_meshes={cfg.environment.robot_meshes}, {substeps} substeps a step; medians of {args.rounds} "
        f"alternating rounds of {steps}-step episodes; load average {load_average():.1f} at the end"
    )
    report("bench_env", setup, rows, append=not args.no_append)


if __name__ == "__main__":
    main()
