"""The baseline the collect-side benches compare against: the env's scene, stepped and rendered by
bare SAPIEN calls (set 9 joint drive targets, physics substeps, render both cameras, read both
pictures as uint8), with no wrapper, no policy, no observation dict and no store."""

from __future__ import annotations

import numpy as np

from f1.shared.config import F1Config


class BareSapien:
    def __init__(self, cfg: F1Config, scene_seed: int = 12345, episode_seed: int = 1):
        from f1.collect.randomization import sample_episode, sample_scene
        from f1.collect.scene import TabletopScene

        env = cfg.environment
        params = sample_scene(env.domain_randomization, scene_seed)
        timestep = 1.0 / (env.control_freq * env.sim_substeps)
        self.scene = TabletopScene(params, env.image_size, ("head", "wrist"), timestep, env.robot_meshes)
        self.scene.place(sample_episode(params, episode_seed, env.home_noise))
        self.joints = self.scene.robot.joints
        self.home = self.scene.robot.qpos()
        self.phase = np.linspace(0, 2 * np.pi, len(self.joints), endpoint=False)
        self.cameras = list(self.scene.cameras.values())
        self.substeps = env.sim_substeps
        self.k = 0

    def steps(self, n: int) -> None:
        from f1.collect.rendering import COLOR_PICTURE

        for _ in range(n):
            targets = self.home + 0.3 * np.sin(0.05 * self.k + self.phase)  # (9,) a smooth sweep of every joint
            self.k += 1
            for joint, target in zip(self.joints, targets.tolist()):
                joint.set_drive_target(target)
            for _ in range(self.substeps):
                self.scene.scene.step()
            self.scene.scene.update_render()
            for camera in self.cameras:
                camera.take_picture()
            for camera in self.cameras:
                camera.get_picture(COLOR_PICTURE)
