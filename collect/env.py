"""`F1RLEnv`: the Panda exploring a randomised tabletop, as a gymnasium env (one SAPIEN scene).

Actions (control mode `delta_qpos`): shape (training.action_dim,) float32 in
[-1, 1]. ACTION_LAYOUT: dims 0-6 are joint deltas, scaled by
`environment.action_scale` (radians per unit) and added to the joints' drive
targets (ManiSkill's "target delta" mode: the arm moves by what was commanded
even though the PD drives lag a step behind), clipped to the joint limits and
to TARGET_LEAD_STEPS steps ahead of the measured positions; dim 7 is the
gripper command (-1 closed .. +1 open, linear). Dims from REAL_ACTION_DIMS on are padding and
ignored. One action holds for `sim_substeps` physics steps (control at
`control_freq` Hz). The layout constants live in f1.collect.env_spec, which
imports no SAPIEN.

Observations (a dict):
    head_rgb          (H, W, 3) uint8    fixed head camera (absent in StudentEnv)
    wrist_rgb         (H, W, 3) uint8    camera on the hand
    state             (state_dim,) float32, STATE_LAYOUT then zeros
    image_history     (h, H, W, 3) uint8 wrist frames at steps t-(h-1)s .. t
    action_history    (h, action_dim)    the action taken after each of those frames (zeros for step t)
    history_pad_mask  (h,) bool          True where the slot is before the episode's start
h = training.n_obs_img_steps, s = training.obs_img_stride (f1.collect.history).
The action history holds the actions as applied: real dims clipped to [-1, 1],
padding zeroed.

Episodes: there is no task: reward 0, `terminated` always False, `truncated`
after training.steps_per_episode actions. `reset(seed, options)`:
- `seed` fixes the episode (robot start = home + `home_noise`, object start
  poses); None draws one from the env's generator.
- `options["scene_seed"]`: the scene to use; it is built (from this seed) only
  when it differs from the current scene's. Without it, a seeded reset uses
  the scene of seed `seed` (so reset(seed=s) always gives the same episode),
  and unseeded resets keep the scene for `scene_reset_interval` episodes, then
  build one from the seed of the episode that rebuilds it.
  `options["scene_id"]` is echoed in `info` (default: the scene seed).
- `options["new_scene"]` True: build the scene anew even when it is the current one, so the
  episode starts from a fresh physics state. A reused scene's bodies are placed exactly, but
  PhysX keeps contact and solver state from the episode before, and after contact-rich steps
  that changes the outcome (measured: 4 of 16 random-policy episodes differed after an OU
  episode in the same scene, one by 19 against 17 contact steps).
A new scene is a new SAPIEN scene; an episode in a reused scene starts from
exactly placed bodies at rest (tests/test_env.py checks that a contact-free
episode's frames depend only on (scene seed, episode seed)); where contact-rich
episodes came before, only `new_scene` gives an identical start.
`info` carries scene_id, scene_seed, episode_seed, randomization (JSON-able
dict of the scene's and the episode's parameters), ee_pos and elapsed_steps,
joint_velocity (9,) float32 (rad/s, arm then fingers: what a real Panda reports; the store does
not keep it), and, unless `environment.privileged_info` is off, for exploration metrics (the
store's format-2 keys, f1.datasets.schema.OBJECT_KEYS): object_pose (slots, 7) float32 and
object_valid (slots,) bool, the clutter's poses in `environment.domain_randomization.max_objects`
slots, and object_contact, whether a robot link touched a clutter object during the step's
physics (False after reset). These are privileged simulator state: no policy or world model sees them.
`info` also carries, per camera, the store's format-4 keys (f1.datasets.schema): `<cam>_pose`
(4, 4) float32, camera-to-world in OpenCV axes (x right, y down, z forward) at the instant of the
step's pictures, and `<cam>_intrinsics` (3, 3) float32 in pixels of the image; with
`environment.depth`, `wrist_depth` (H, W) uint16, the wrist picture's depth in millimetres.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence

import gymnasium as gym
import numpy as np

from f1.collect.env_spec import (  # noqa: F401 - re-exported: the env's layout constants
    ACTION_LAYOUT,
    REAL_ACTION_DIMS,
    REAL_STATE_DIMS,
    STATE_BOUND,
    STATE_LAYOUT,
)
from f1.collect.history import ObservationHistory
from f1.collect.randomization import sample_episode, sample_scene
from f1.collect.robot import ARM_JOINTS, gripper_command_to_finger
from f1.collect.scene import CAMERA_NAMES, TabletopScene
from f1.shared.config import F1Config


# Arm targets accumulate the deltas but never lead the measured joint positions by more than this
# many full-scale steps, so an arm pressed against the table does not wind its targets up.
TARGET_LEAD_STEPS = 2.0


class F1RLEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        cfg: F1Config,
        cameras: Sequence[str] = CAMERA_NAMES,
        render_mode: Optional[str] = None,
        render_device: Optional[str] = None,
    ):
        cameras = tuple(cameras)
        if "wrist" not in cameras or not set(cameras) <= set(CAMERA_NAMES):
            raise ValueError(f"cameras must include 'wrist' and come from {CAMERA_NAMES}, got {cameras}")
        env, train = cfg.environment, cfg.training
        self.cfg = cfg
        self.cameras = cameras
        self.render_mode = render_mode
        self.render_device = render_device
        self.metadata = {**self.metadata, "render_fps": env.control_freq}
        self.action_dim, self.state_dim = train.action_dim, train.state_dim
        self.steps_per_episode = train.steps_per_episode
        self.substeps = env.sim_substeps
        self.timestep = 1.0 / (env.control_freq * env.sim_substeps)
        self.action_scale = np.float32(env.action_scale)
        height, width = env.image_size
        h = train.n_obs_img_steps
        image = gym.spaces.Box(0, 255, (height, width, 3), np.uint8)
        spaces = {f"{name}_rgb": image for name in cameras}
        spaces.update(
            state=gym.spaces.Box(-STATE_BOUND, STATE_BOUND, (self.state_dim,), np.float32),
            image_history=gym.spaces.Box(0, 255, (h, height, width, 3), np.uint8),
            action_history=gym.spaces.Box(-1.0, 1.0, (h, self.action_dim), np.float32),
            history_pad_mask=gym.spaces.Box(0, 1, (h,), np.bool_),
        )
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)
        self._history = ObservationHistory(h, train.obs_img_stride, (height, width, 3), self.action_dim)
        self._scene: Optional[TabletopScene] = None
        self._episodes_in_scene = 0
        self._elapsed = 0
        self._info: dict[str, Any] = {}
        self._randomization_json = "{}"
        self._pending: Optional[tuple[np.ndarray, dict[str, Any]]] = None  # state and info of a started step
        self._frames: dict[str, np.ndarray] = {}
        self._depth = cfg.environment.depth
        self._targets = np.zeros(ARM_JOINTS + 2, np.float32)
        self.object_slots = cfg.environment.domain_randomization.max_objects
        self._touched = False  # a robot link touched a clutter object during the last step's physics

    @property
    def scene(self) -> Optional[TabletopScene]:
        """The current SAPIEN scene (None before the first reset)."""
        return self._scene

    # ------------------------------------------------------------------ reset

    def _scene_for(self, episode_seed: int, seeded: bool, options: dict) -> TabletopScene:
        requested = options.get("scene_seed")
        current = self._scene.params.scene_seed if self._scene is not None else None
        if requested is None:
            # A seeded reset restarts the stream: its scene comes from its seed, so reset(seed=s) always
            # gives the same episode. Unseeded resets reuse the scene for scene_reset_interval episodes.
            due = seeded or self._scene is None or self._episodes_in_scene >= self.cfg.environment.scene_reset_interval
            requested = episode_seed if due else current
        if requested != current or options.get("new_scene", False):
            self._scene = None  # let SAPIEN free the old scene before the new one is made
            params = sample_scene(self.cfg.environment.domain_randomization, int(requested))
            self._scene = TabletopScene(
                params,
                self.cfg.environment.image_size,
                self.cameras,
                self.timestep,
                self.cfg.environment.robot_meshes,
                self.render_device,
                self.cfg.environment.robot_assets_dir,
            )
            self._episodes_in_scene = 0
        return self._scene

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        options = options or {}
        episode_seed = int(seed) if seed is not None else int(self.np_random.integers(2**63 - 1))
        scene = self._scene_for(episode_seed, seed is not None, options)
        self._episodes_in_scene += 1
        episode = sample_episode(scene.params, episode_seed, self.cfg.environment.home_noise)
        scene.place(episode)
        self._targets[:] = scene.robot.qpos()  # place() put the drive targets at the start pose
        self._elapsed = 0
        self._touched = False
        self._info = {
            "scene_id": options.get("scene_id", scene.params.scene_seed),
            "scene_seed": scene.params.scene_seed,
            "episode_seed": episode_seed,
        }
        # Kept as JSON text: every info gets its own copy (json.loads, faster than deepcopy), as
        # gymnasium requires, and the parameters are known to serialise.
        self._randomization_json = json.dumps({"scene": scene.params.to_dict(), "episode": episode.to_dict()})
        scene.take_pictures()
        state, info = self._state_and_info()
        self._read_frames(info)
        self._history.reset(self._frames["wrist"])
        return self._observation(state), info

    # ------------------------------------------------------------------ step
    # step = apply_action (targets, physics, start rendering, state and info while the cameras render)
    # + finish_step (wait for the pixels, build obs). The vector env calls the halves separately, so
    # one env's physics also overlaps another's rendering.

    def apply_action(self, action: np.ndarray) -> np.ndarray:
        """Set the drive targets, run the physics substeps, start the cameras; returns the action as applied."""
        scene = self._scene
        assert scene is not None, "reset() the env before step()"
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (self.action_dim,):
            raise ValueError(f"action must have shape ({self.action_dim},), got {action.shape}")
        applied = np.zeros(self.action_dim, np.float32)
        applied[:REAL_ACTION_DIMS] = np.clip(action[:REAL_ACTION_DIMS], -1.0, 1.0)
        robot = scene.robot
        qpos = robot.qpos()  # (9,)
        targets = self._targets  # (9,) the previous step's targets
        targets[:ARM_JOINTS] += applied[:ARM_JOINTS] * self.action_scale
        lead = TARGET_LEAD_STEPS * self.action_scale
        np.clip(targets[:ARM_JOINTS], qpos[:ARM_JOINTS] - lead, qpos[:ARM_JOINTS] + lead, out=targets[:ARM_JOINTS])
        targets[ARM_JOINTS:] = gripper_command_to_finger(float(applied[ARM_JOINTS]))
        np.clip(targets, robot.lower, robot.upper, out=targets)
        robot.set_targets(targets)
        self._touched = scene.step_physics(self.substeps)
        scene.take_pictures()
        self._history.record_action(applied)
        self._elapsed += 1
        self._pending = self._state_and_info()
        return applied

    def finish_step(self):
        """Wait for the pictures `apply_action` started; return what gymnasium's step returns."""
        assert self._pending is not None, "finish_step() must follow apply_action()"
        (state, info), self._pending = self._pending, None
        self._read_frames(info)
        self._history.record_frame(self._frames["wrist"])
        truncated = self._elapsed >= self.steps_per_episode
        return self._observation(state), 0.0, False, truncated, info

    def step(self, action: np.ndarray):
        self.apply_action(action)
        return self.finish_step()

    # ------------------------------------------------------------------ observation

    def _read_frames(self, info: dict[str, Any]) -> None:
        """Wait for the pictures; the wrist depth (environment.depth) goes into the step's info."""
        self._frames = {name: self._scene.read(name) for name in self.cameras}
        if self._depth:
            info["wrist_depth"] = self._scene.read_depth("wrist")  # (H, W) uint16 mm

    def _state_and_info(self) -> tuple[np.ndarray, dict[str, Any]]:
        """The robot state (STATE_LAYOUT, zero-padded) and the step's info, read from the physics."""
        robot = self._scene.robot
        qpos = robot.qpos()  # (9,)
        tcp = robot.tcp_pose()
        state = np.zeros(self.state_dim, np.float32)
        state[STATE_LAYOUT["arm_qpos"]] = qpos[:ARM_JOINTS]
        state[STATE_LAYOUT["gripper_width"]] = qpos[ARM_JOINTS] + qpos[ARM_JOINTS + 1]
        state[STATE_LAYOUT["tcp_pos"]] = tcp.p
        state[STATE_LAYOUT["tcp_quat_wxyz"]] = tcp.q
        info = {
            **self._info,
            "randomization": json.loads(self._randomization_json),
            "ee_pos": state[STATE_LAYOUT["tcp_pos"]].copy(),
            "elapsed_steps": self._elapsed,
            "joint_velocity": robot.qvel(),
            **self._scene.camera_geometry(),  # the poses of this step's pictures: take_pictures() ran update_render()
        }
        if self.cfg.environment.privileged_info:
            object_pose, object_valid = self._scene.object_poses(self.object_slots)
            info.update(object_pose=object_pose, object_valid=object_valid, object_contact=self._touched)
        return state, info

    def _observation(self, state: np.ndarray) -> dict[str, np.ndarray]:
        images, actions, pad = self._history.arrays()
        obs = {f"{name}_rgb": frame for name, frame in self._frames.items()}
        obs.update(state=state, image_history=images, action_history=actions, history_pad_mask=pad)
        return obs

    # ------------------------------------------------------------------ gymnasium extras

    def render(self) -> Optional[np.ndarray]:
        """rgb_array: the latest frames of every camera side by side, (H, n*W, 3) uint8."""
        if self.render_mode != "rgb_array" or not self._frames:
            return None
        return np.concatenate([self._frames[name] for name in self.cameras], axis=1)

    def close(self) -> None:
        self._scene = None


class TeacherEnv(F1RLEnv):
    """Head and wrist cameras: what the teacher world model is trained on."""

    def __init__(self, cfg: F1Config, **kwargs):
        super().__init__(cfg, cameras=("head", "wrist"), **kwargs)


class StudentEnv(F1RLEnv):
    """Wrist camera only (no head camera is created, so each step renders one view)."""

    def __init__(self, cfg: F1Config, **kwargs):
        super().__init__(cfg, cameras=("wrist",), **kwargs)
