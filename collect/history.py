"""The observation history: the last h wrist frames at stride s, and the actions taken after them.

Alignment (DESIGN.md section 2): `image_history[i]` is the frame before
`action_history[i]`, `image_history[i + 1]` the frame after it. The slots hold
steps [t-(h-1)s .. t]; the action after the current frame (step t) is not
known yet, so its slot is zeros. Slots before the episode's start repeat
step 0's frame with a zero action and are flagged in the pad mask; nothing
reaches into a previous episode, because `reset` starts a new history.

Steps live in a ring of (h-1)s+1 slots, so memory stays fixed however long
an episode runs. Frames and actions are recorded in strict alternation
(frame 0, action 0, frame 1, ...); anything else raises, so the two
histories can never drift out of step.
"""

from __future__ import annotations

import numpy as np


class HistoryOutOfStep(RuntimeError):
    """Frames and actions were not recorded in alternation."""


class ObservationHistory:
    def __init__(self, length: int, stride: int, frame_shape: tuple[int, ...], action_dim: int):
        assert length >= 1 and stride >= 1, (length, stride)
        self.length, self.stride = length, stride
        self.span = (length - 1) * stride + 1  # steps a full history covers
        self._frames = np.zeros((self.span, *frame_shape), np.uint8)  # ring, indexed by step % span
        self._actions = np.zeros((self.span, action_dim), np.float32)  # action after the frame of the same step
        self._frames_seen = 0
        self._actions_seen = 0
        self._offsets = stride * np.arange(length - 1, -1, -1)  # (h,) steps back from t, per slot

    @property
    def step(self) -> int:
        """Index t of the newest frame."""
        return self._frames_seen - 1

    def reset(self, first_frame: np.ndarray) -> None:
        self._frames_seen = self._actions_seen = 0
        self._actions[:] = 0.0
        self.record_frame(first_frame)

    def record_action(self, action: np.ndarray) -> None:
        """The action taken after the newest frame."""
        if self._actions_seen != self._frames_seen - 1:
            raise HistoryOutOfStep(
                f"action recorded after {self._frames_seen} frames and {self._actions_seen} actions; "
                "expected exactly one action per frame"
            )
        self._actions[self._actions_seen % self.span] = action
        self._actions_seen += 1

    def record_frame(self, frame: np.ndarray) -> None:
        """The frame observed after the last recorded action (or the first frame, from reset)."""
        if self._actions_seen != self._frames_seen:
            raise HistoryOutOfStep(
                f"frame recorded after {self._frames_seen} frames and {self._actions_seen} actions; "
                "record the action taken first"
            )
        slot = self._frames_seen % self.span
        self._frames[slot] = frame
        self._actions[slot] = 0.0  # this frame's action is not known yet
        self._frames_seen += 1

    def slot_steps(self) -> np.ndarray:
        """(h,) the step each slot shows, before padding: t-(h-1)s .. t, negative where padded."""
        return self.step - self._offsets

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image_history (h, H, W, 3) uint8, action_history (h, A) float32, pad_mask (h,) bool), fresh copies."""
        assert self._frames_seen > 0, "reset() the history before reading it"
        steps = self.slot_steps()  # (h,)
        pad = steps < 0
        ring = np.maximum(steps, 0) % self.span  # padded slots show step 0
        images = self._frames[ring]  # (h, H, W, 3), fancy indexing copies
        actions = self._actions[ring]  # (h, A)
        actions[pad] = 0.0
        if images.shape[0] != actions.shape[0]:
            raise HistoryOutOfStep(f"image history has {images.shape[0]} slots, action history {actions.shape[0]}")
        return images, actions, pad
