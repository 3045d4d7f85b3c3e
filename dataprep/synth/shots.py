"""One shot of the synthetic corpus: its scene, its sound, its faces' motion, and its frames.

A shot is planned first (audio, curves, background: cheap) and rendered frame by frame later,
so a whole video never has to sit in memory.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import cv2
import numpy as np

from .face import FaceStyle, render_head
from .motion import blinks, head_motion
from .voice import RATE, Voice, room_tone, synth_music, synth_speech

FACE_KINDS = {"talk", "audio_shifted", "silent", "small_face", "two_faces"}
SPEECH_KINDS = {"talk", "audio_shifted", "small_face", "two_faces", "noface_speech"}


@dataclass
class FaceTrack:
    """One drawn face through a shot."""
    identity: int            # index within the video
    style: FaceStyle
    centre: tuple[float, float]
    scale: float
    motion: dict             # yaw, pitch, roll, dx, dy per frame
    mouth: np.ndarray        # mouth opening per frame (video time)
    blink: np.ndarray


@dataclass
class ShotPlan:
    id: str
    kind: str
    start_frame: int
    n_frames: int
    speaker: int | None      # index of the identity heard, None when nobody speaks
    offset_frames: int       # + = audio late relative to the video
    audio: np.ndarray        # n_frames * RATE / fps samples
    speaking: np.ndarray     # (n_frames,) identity index heard, -1 otherwise (audio time)
    background: np.ndarray
    faces: list[FaceTrack] = field(default_factory=list)   # the first one is the labelled face


def scene(rng: np.random.Generator, hue: float, width: int, height: int) -> np.ndarray:
    """A simple room: graded wall, floor, a window and a picture, in one dominant hue."""
    def rgb(h, s, v):
        return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255

    sat = rng.uniform(0.35, 0.7)
    top, bottom = rgb(hue, sat, rng.uniform(0.55, 0.8)), rgb(hue, sat * 0.8, rng.uniform(0.3, 0.5))
    ramp = np.linspace(0, 1, height)[:, None, None]
    img = (top * (1 - ramp) + bottom * ramp) * np.ones((1, width, 1))
    floor_y = int(height * rng.uniform(0.72, 0.82))
    img[floor_y:] = rgb(hue + 0.08, sat * 0.6, 0.28)
    img = np.clip(img, 0, 255).astype(np.uint8)
    # A window on one side, a picture frame on the other (never behind the face's centre).
    left = rng.random() < 0.5
    wx = int(width * (rng.uniform(0.03, 0.12) if left else rng.uniform(0.72, 0.82)))
    wy = int(height * rng.uniform(0.08, 0.2))
    cv2.rectangle(img, (wx, wy), (wx + int(width * 0.16), wy + int(height * 0.35)),
                  tuple(int(c) for c in rgb(hue + 0.5, 0.15, 0.95)), -1, cv2.LINE_AA)
    px = int(width * (rng.uniform(0.74, 0.84) if left else rng.uniform(0.04, 0.12)))
    py = int(height * rng.uniform(0.15, 0.3))
    cv2.rectangle(img, (px, py), (px + int(width * 0.12), py + int(height * 0.16)),
                  tuple(int(c) for c in rgb(hue + 0.3, 0.6, 0.5)), -1, cv2.LINE_AA)
    cv2.rectangle(img, (px, py), (px + int(width * 0.12), py + int(height * 0.16)), (40, 30, 20), 2, cv2.LINE_AA)
    return img


def _shift(x: np.ndarray, k: int, fill) -> np.ndarray:
    """x delayed by k steps (k < 0: advanced), same length, gap filled with `fill`."""
    out = np.full_like(x, fill)
    if k > 0:
        out[k:] = x[:-k]
    elif k < 0:
        out[:k] = x[-k:]
    else:
        out[:] = x
    return out


def plan_shot(rng: np.random.Generator, spec: dict, shot_id: str, start_frame: int, hue: float,
              styles: list[FaceStyle], voices: list[Voice], cfg: dict) -> ShotPlan:
    fps, width, height = cfg["fps"], cfg["width"], cfg["height"]
    kind = spec["kind"]
    n = int(round(spec["duration"] * fps))
    hop = RATE // fps
    speaker = spec.get("speaker")
    offset = int(spec.get("offset_frames", 0))
    if kind in SPEECH_KINDS:
        speech = synth_speech(rng, voices[speaker], n / fps, fps)
        voice_audio, mouth = speech.audio, speech.mouth_open
        speaking = np.where(speech.speaking, speaker, -1)
        # The audio is what moves: the mouth stays in video time, the sound is shifted.
        voice_audio = _shift(voice_audio, offset * hop, 0.0)
        speaking = _shift(speaking, offset, -1)
    else:
        voice_audio = synth_music(rng, n / fps) if kind == "noface_music" else np.zeros(n * hop, np.float32)
        mouth = np.zeros(n, np.float32)
        speaking = np.full(n, -1)
    audio = voice_audio[:n * hop] + room_tone(rng, n * hop)
    plan = ShotPlan(id=shot_id, kind=kind, start_frame=start_frame, n_frames=n,
                    speaker=speaker if kind in SPEECH_KINDS else None, offset_frames=offset,
                    audio=audio.astype(np.float32), speaking=speaking.astype(np.int64),
                    background=scene(rng, hue, width, height))
    if kind not in FACE_KINDS:
        return plan
    if kind == "two_faces":
        scale = cfg["two_face_scale"]
        other = 1 - speaker
        places = [(width * 0.28, height * 0.42), (width * 0.72, height * 0.42)]
        if rng.random() < 0.5:
            places.reverse()
        for ident, place, m in ((speaker, places[0], mouth), (other, places[1], np.zeros(n, np.float32))):
            plan.faces.append(FaceTrack(ident, styles[ident], place, scale * rng.uniform(0.95, 1.05),
                                        head_motion(rng, n, fps, shift=3.0), m, blinks(rng, n, fps)))
        return plan
    if kind == "small_face":
        scale = cfg["small_face_scale"]
        centre = (width * rng.uniform(0.3, 0.7), height * rng.uniform(0.45, 0.6))
        motion = head_motion(rng, n, fps, shift=1.5)
    else:
        scale = cfg["face_scale"] * rng.uniform(0.93, 1.07)
        centre = (width / 2 + rng.uniform(-0.1, 0.1) * width, height * rng.uniform(0.38, 0.42))
        motion = head_motion(rng, n, fps)
    plan.faces.append(FaceTrack(speaker, styles[speaker], centre, scale, motion, mouth, blinks(rng, n, fps)))
    return plan


def render_frame(plan: ShotPlan, i: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Frame i of the shot, with the labelled face's box and (yaw, pitch, roll), or Nones."""
    frame = plan.background.copy()
    box = pose = None
    # Draw the far faces first; the labelled face is faces[0].
    for k, f in reversed(list(enumerate(plan.faces))):
        m = f.motion
        centre = (f.centre[0] + m["dx"][i] * f.scale / 60, f.centre[1] + m["dy"][i] * f.scale / 60)
        b = render_head(frame, f.style, centre, f.scale, m["yaw"][i], m["pitch"][i], m["roll"][i],
                        float(f.mouth[i]), float(f.blink[i]))
        if k == 0:
            box, pose = b, np.array([m["yaw"][i], m["pitch"][i], m["roll"][i]], np.float32)
    return frame, box, pose
