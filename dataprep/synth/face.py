"""Procedurally drawn heads with a known pose, mouth opening and blink.

The head is a union of ellipsoids (cranium, jaw, nose, ears) ray-cast orthographically and
shaded (Lambert), so rotating it moves the features against the silhouette the way a real head
does -- which is what MediaPipe's pose estimate reads. Eyes, brows, lips and hair are painted in
a frontal "texture" (head coordinates x, y) looked up at each visible surface point, so they
foreshorten correctly with yaw and pitch.

Head coordinates: x to the image right, y down, z towards the camera; one unit is half the
cranium height. Angles use MediaPipe's convention (see ``emo.media.pose``): the drawn rotation is
the mirror (y flipped) of ``euler_to_rotation(yaw, pitch, roll)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from emo.media.pose import euler_to_rotation

TEX_PX = 96                                   # texture pixels per head unit
TEX_X, TEX_Y = (-1.3, 1.3), (-1.25, 1.75)     # texture extent in head units
_FLIP = np.diag([1.0, -1.0, 1.0])             # our y points down, MediaPipe's up
JAW_DROP = 0.1                                # head units the chin drops at mouth_open = 1
PITCH_BIAS = 12.0                             # degrees, measured (see head_rotation)

SKIN_TONES = [(241, 194, 167), (224, 172, 138), (198, 134, 100), (160, 105, 72),
              (120, 78, 52), (232, 190, 150), (250, 214, 190), (141, 85, 60)]
HAIR_COLOURS = [(30, 22, 18), (70, 45, 25), (120, 80, 40), (190, 150, 90), (150, 60, 30),
                (110, 110, 110), (20, 20, 25)]
IRIS_COLOURS = [(70, 45, 25), (60, 100, 150), (70, 120, 70), (110, 80, 40), (40, 30, 25)]
LIP_COLOURS = [(190, 100, 100), (170, 80, 85), (150, 70, 70), (200, 120, 120), (130, 60, 60)]
CLOTH_COLOURS = [(40, 60, 120), (120, 40, 40), (50, 90, 60), (90, 90, 90), (140, 120, 60),
                 (60, 40, 80), (200, 200, 200)]


@dataclass(frozen=True)
class FaceStyle:
    """Everything that makes one identity look like itself."""
    width: float = 0.78          # cranium half-width (height is 1)
    depth: float = 0.85          # cranium half-depth
    jaw_width: float = 0.62
    jaw_drop: float = 0.62       # jaw ellipsoid centre below the cranium centre
    skin: tuple = SKIN_TONES[0]
    hair: tuple = HAIR_COLOURS[0]
    hair_style: str = "short"    # short | long | bald
    hairline: float = -0.62      # y of the hairline at the middle of the forehead
    iris: tuple = IRIS_COLOURS[0]
    lips: tuple = LIP_COLOURS[0]
    cloth: tuple = CLOTH_COLOURS[0]
    eye_gap: float = 0.30        # x of each eye centre
    eye_y: float = 0.05
    eye_size: float = 0.14       # half-width of an eye
    brow_lift: float = 0.16
    brow_thick: float = 0.045
    nose_len: float = 0.36
    nose_width: float = 0.12
    mouth_y: float = 0.78
    mouth_width: float = 0.22


def random_style(rng: np.random.Generator, index: int) -> FaceStyle:
    """A distinct identity; `index` cycles the palettes so neighbours never look alike."""
    pick = lambda seq, k: tuple(int(c) for c in seq[(index * k + int(rng.integers(0, 2))) % len(seq)])
    return FaceStyle(
        width=float(rng.uniform(0.72, 0.84)), depth=float(rng.uniform(0.8, 0.9)),
        jaw_width=float(rng.uniform(0.55, 0.68)), jaw_drop=float(rng.uniform(0.56, 0.66)),
        skin=pick(SKIN_TONES, 3), hair=pick(HAIR_COLOURS, 2),
        hair_style=("short", "long", "short", "bald", "long")[index % 5],
        hairline=float(rng.uniform(-0.68, -0.55)), iris=pick(IRIS_COLOURS, 1),
        lips=pick(LIP_COLOURS, 2), cloth=pick(CLOTH_COLOURS, 3),
        eye_gap=float(rng.uniform(0.27, 0.33)), eye_y=float(rng.uniform(0.0, 0.08)),
        eye_size=float(rng.uniform(0.12, 0.15)), brow_lift=float(rng.uniform(0.14, 0.19)),
        brow_thick=float(rng.uniform(0.035, 0.06)), nose_len=float(rng.uniform(0.32, 0.4)),
        nose_width=float(rng.uniform(0.1, 0.14)), mouth_y=float(rng.uniform(0.74, 0.82)),
        mouth_width=float(rng.uniform(0.19, 0.25)),
    )


def head_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation from head to camera coordinates (both y down) for MediaPipe-convention angles.

    The drawn head's neutral is tilted up by PITCH_BIAS: MediaPipe reads the untilted drawing as
    looking down by about that much, so this makes "pose 0" mean what MediaPipe calls frontal.
    """
    return _FLIP @ euler_to_rotation(yaw, pitch, roll) @ euler_to_rotation(0, -PITCH_BIAS, 0) @ _FLIP


def _ellipsoids(style: FaceStyle, mouth_open: float) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(centre, radii, part) in head coordinates; part 0 = head, 1 = nose, 2 = ear."""
    s = style
    jaw = JAW_DROP * mouth_open  # the chin drops a little as the mouth opens
    return [
        (np.array([0.0, 0.0, 0.0]), np.array([s.width, 1.0, s.depth]), 0),
        (np.array([0.0, s.jaw_drop + jaw, 0.12]), np.array([s.jaw_width, 0.52, s.depth * 0.72]), 0),
        (np.array([0.0, s.eye_y + 0.42, s.depth * 0.95]), np.array([s.nose_width, s.nose_len * 0.75, 0.2]), 1),
        (np.array([s.width * 0.96, 0.2, -0.05]), np.array([0.08, 0.22, 0.14]), 2),
        (np.array([-s.width * 0.96, 0.2, -0.05]), np.array([0.08, 0.22, 0.14]), 2),
    ]


def _tex(pt) -> tuple[int, int]:
    """Head (x, y) -> texture pixel, in cv2's 4-bit sub-pixel fixed point."""
    return (int(round((pt[0] - TEX_X[0]) * TEX_PX * 16)), int(round((pt[1] - TEX_Y[0]) * TEX_PX * 16)))


def _ell(img, centre, axes, colour, angle=0.0, start=0, end=360, thickness=-1):
    c = _tex(centre)
    a = (max(1, int(round(axes[0] * TEX_PX * 16))), max(1, int(round(axes[1] * TEX_PX * 16))))
    cv2.ellipse(img, c, a, angle, start, end, colour, thickness, cv2.LINE_AA, 4)


def _poly(img, pts, colour, closed=True, thickness=-1):
    p = np.array([_tex(q) for q in pts], np.int32)
    if thickness < 0:
        cv2.fillPoly(img, [p], colour, cv2.LINE_AA, 4)
    else:
        cv2.polylines(img, [p], closed, colour, max(1, int(thickness * TEX_PX)), cv2.LINE_AA, 4)


def paint_texture(style: FaceStyle, mouth_open: float, blink: float) -> np.ndarray:
    """The frontal face painted in head (x, y): skin, hair, brows, eyes, nostrils, lips."""
    s = style
    h = int((TEX_Y[1] - TEX_Y[0]) * TEX_PX)
    w = int((TEX_X[1] - TEX_X[0]) * TEX_PX)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = s.skin
    skin = np.array(s.skin, float)
    shade = lambda f: tuple(int(v) for v in np.clip(skin * f, 0, 255))
    # Cheeks: a faint blush.
    for side in (-1, 1):
        _ell(img, (side * 0.38, s.eye_y + 0.42), (0.14, 0.09), tuple(int(v) for v in skin * 0.93 + np.array([18, 0, 0]) * 0.7))
    if s.hair_style != "bald":
        # Hair above a curved hairline, with a side parting.
        xs = np.linspace(-1.3, 1.3, 27)
        line = [(x, s.hairline + 0.25 * x * x + 0.05 * np.sin(4 * x)) for x in xs]
        _poly(img, [(-1.3, -1.3)] + line + [(1.3, -1.3)], s.hair)
    for side in (-1, 1):
        ex, ey, es = side * s.eye_gap, s.eye_y, s.eye_size
        # Brow: a thick arc.
        bx = np.linspace(-1, 1, 9)
        brow = [(ex + es * 1.15 * b, ey - s.brow_lift - 0.04 * (1 - b * b) + 0.02 * side * b) for b in bx]
        _poly(img, brow, tuple(int(c * 0.8) for c in s.hair), closed=False, thickness=s.brow_thick)
        # Eye socket shadow, white, iris, pupil, highlight.
        _ell(img, (ex, ey - 0.01), (es * 1.25, es * 0.7), shade(0.86))
        openness = max(0.0, 1.0 - blink)
        eh = es * 0.52
        white = np.zeros_like(img[..., 0])
        _ell(white, (ex, ey), (es, eh), 255)
        eye = img.copy()
        _ell(eye, (ex, ey), (es, eh), (245, 245, 240))
        _ell(eye, (ex, ey), (es * 0.5, es * 0.5), s.iris)
        _ell(eye, (ex, ey), (es * 0.22, es * 0.22), (15, 10, 10))
        _ell(eye, (ex + es * 0.15, ey - es * 0.15), (es * 0.08, es * 0.08), (250, 250, 250))
        m = white[..., None].astype(np.float32) / 255
        img[:] = (eye * m + img * (1 - m)).astype(np.uint8)
        # Upper lid comes down over the eye as it blinks; lash line at its edge.
        lid_y = ey - eh + 2 * eh * (1 - openness)
        lx = np.linspace(-1, 1, 13)
        lid_edge = [(ex + es * 1.05 * t, lid_y + (eh * 0.35 * (1 - t * t) if openness < 0.5 else -eh * 0.1 * (1 - t * t) * openness)) for t in lx]
        _poly(img, [(ex - es * 1.1, ey - eh * 1.6), (ex + es * 1.1, ey - eh * 1.6)] + lid_edge[::-1], shade(0.95))
        _poly(img, lid_edge, (35, 25, 25), closed=False, thickness=0.022)
        _ell(img, (ex, ey), (es * 1.02, eh * 1.02), shade(0.7), start=10, end=170, thickness=max(1, TEX_PX // 60))
    # Nostrils and the shadow under the nose.
    ny = s.eye_y + 0.42 + s.nose_len * 0.62
    for side in (-1, 1):
        _ell(img, (side * s.nose_width * 0.55, ny), (0.035, 0.02), shade(0.45))
    # Mouth: lips around a dark opening whose height follows mouth_open; teeth at the top.
    mx, my, mw = 0.0, s.mouth_y, s.mouth_width
    gap = 0.01 + 0.26 * mouth_open
    lip = tuple(int(c) for c in s.lips)
    dark_lip = tuple(int(c * 0.8) for c in s.lips)
    t = np.linspace(-1, 1, 21)
    upper_top = [(mx + mw * u, my - gap / 2 - 0.05 * (1 - u * u) + 0.015 * np.cos(np.pi * u * 2) * (1 - abs(u))) for u in t]
    upper_bot = [(mx + mw * u * 0.98, my - gap / 2 * (1 - u * u) ) for u in t]
    lower_top = [(mx + mw * u * 0.98, my + gap / 2 * (1 - u * u)) for u in t]
    lower_bot = [(mx + mw * u * 0.9, my + gap / 2 * (1 - u * u) + 0.075 * (1 - u * u) ** 0.8) for u in t]
    _poly(img, upper_top + upper_bot[::-1], dark_lip)
    _poly(img, lower_top + lower_bot[::-1], lip)
    if mouth_open > 0.02:
        _poly(img, upper_bot + lower_top[::-1], (60, 20, 25))
        teeth = [(mx + mw * u * 0.7, my - gap / 2 * (1 - u * u) + min(gap * 0.35, 0.035)) for u in t]
        _poly(img, upper_bot[3:-3] + teeth[3:-3][::-1], (235, 230, 220))
    else:
        _poly(img, upper_bot, (90, 40, 45), closed=False, thickness=0.012)
    return img


@lru_cache(maxsize=256)
def cached_texture(style: FaceStyle, mouth_40: int, blink_20: int) -> np.ndarray:
    """paint_texture at mouth opening and blink quantised to 1/40 and 1/20 (drawing is slow)."""
    return paint_texture(style, mouth_40 / 40, blink_20 / 20)


def render_head(canvas: np.ndarray, style: FaceStyle, centre: tuple[float, float], scale: float,
                yaw: float, pitch: float, roll: float, mouth_open: float, blink: float,
                light: np.ndarray | None = None) -> np.ndarray:
    """Draw a head (with neck, shoulders, hair) on `canvas` in place; return its face box.

    `centre` is the cranium centre in pixels, `scale` pixels per head unit. The box
    (x0, y0, x1, y1) is the extent of the face region MediaPipe's mesh covers: forehead to chin,
    cheek to cheek (see `face_box`).
    """
    H, W = canvas.shape[:2]
    cx, cy = centre
    s = style
    rot = head_rotation(yaw, pitch, roll)
    _draw_body(canvas, style, centre, scale, roll)

    # Ray-cast the head in a window around it: nearest surface point and its ellipsoid per pixel.
    # (The union of the ellipsoids stays within about 1.05 units sideways and 1.3 below the
    # centre at any angle used here.)
    r = 1.15 * scale
    x0, x1 = int(max(0, np.floor(cx - r))), int(min(W, np.ceil(cx + r)))
    y0, y1 = int(max(0, np.floor(cy - 1.15 * scale))), int(min(H, np.ceil(cy + 1.45 * scale)))
    if x1 <= x0 or y1 <= y0:
        return face_box(style, centre, scale, yaw, pitch, roll, mouth_open)
    u = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx) / scale
    v = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy) / scale
    best_z = np.full((len(v), len(u)), -np.inf, np.float32)
    which = np.full(best_z.shape, -1, np.int8)
    rt = rot.T.astype(np.float32)
    ells = [(c.astype(np.float32), r.astype(np.float32), k) for c, r, k in _ellipsoids(style, mouth_open)]
    for e, (c3, radii, _) in enumerate(ells):
        # Only the pixels this ellipsoid can cover (its bounding sphere's projection).
        cc = rot @ c3
        rmax = float(radii.max())
        i0, i1 = np.searchsorted(u, [cc[0] - rmax, cc[0] + rmax])
        j0, j1 = np.searchsorted(v, [cc[1] - rmax, cc[1] + rmax])
        if i1 <= i0 or j1 <= j0:
            continue
        uu, vv = u[None, i0:i1], v[j0:j1, None]
        inv = (1.0 / radii).astype(np.float32)
        # Ray p(z) = (u, v, z) in camera coords -> scaled head coords a + z b on the unit sphere.
        a = [(uu * rt[k, 0] + vv * rt[k, 1] - c3[k]) * inv[k] for k in range(3)]
        b = rt[:, 2] * inv
        bb = float(b @ b)
        ab = a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
        disc = ab * ab - bb * (a[0] * a[0] + a[1] * a[1] + a[2] * a[2] - 1.0)
        z = (np.sqrt(np.maximum(disc, 0)) - ab) / bb
        zb = best_z[j0:j1, i0:i1]
        closer = (disc > 0) & (z > zb)
        zb[closer] = z[closer]
        which[j0:j1, i0:i1][closer] = e
    mask = which >= 0
    if not mask.any():
        return face_box(style, centre, scale, yaw, pitch, roll, mouth_open)
    jj, ii = np.nonzero(mask)
    q_pts = (u[ii, None] * rt[:, 0] + v[jj, None] * rt[:, 1] + best_z[jj, ii, None] * rt[:, 2]).astype(np.float32)
    idx = which[jj, ii]
    centres = np.array([c for c, _, _ in ells], np.float32)
    inv2 = np.array([1.0 / r ** 2 for _, r, _ in ells], np.float32)
    kinds = np.array([k for _, _, k in ells], np.int8)
    n_pts = (q_pts - centres[idx]) * inv2[idx]
    n_pts /= np.maximum(np.linalg.norm(n_pts, axis=1, keepdims=True), 1e-6)
    light = np.array([-0.35, -0.45, 0.82], np.float32) if light is None else light
    light = (rot.T @ (light / np.linalg.norm(light))).astype(np.float32)   # into head coords
    shading = 0.35 + 0.75 * np.clip(n_pts @ light, 0, 1)
    part = np.full(mask.shape, -1, np.int8)
    part[jj, ii] = kinds[idx]
    q_best = np.zeros(mask.shape + (3,), np.float32)
    q_best[jj, ii] = q_pts
    shade_img = np.zeros(mask.shape, np.float32)
    shade_img[jj, ii] = shading

    # Colour: texture on the front, skin or hair elsewhere.
    tex = cached_texture(style, int(round(mouth_open * 40)), int(round(blink * 20)))
    mx = ((q_best[..., 0] - TEX_X[0]) * TEX_PX - 0.5).astype(np.float32)
    my = ((q_best[..., 1] - TEX_Y[0]) * TEX_PX - 0.5).astype(np.float32)
    colour = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    skin = np.array(s.skin, np.float32)
    back = q_best[..., 2] < 0.25 * s.depth
    colour[back | (part == 2)] = skin
    colour[part == 1] = np.where((q_best[part == 1, 1] > s.eye_y + 0.42 + s.nose_len * 0.5)[:, None],
                                 colour[part == 1], skin)
    if s.hair_style != "bald":
        side_hair = (part == 0) & back & (q_best[..., 1] < 0.1 + (0.9 if s.hair_style == "long" else 0.0))
        side_hair |= (part == 0) & (q_best[..., 1] < s.hairline - 0.15) & (q_best[..., 2] < 0.6 * s.depth)
        colour[side_hair] = np.array(s.hair, np.float32)
    rgb = colour * shade_img[..., None]
    # Soft silhouette: blur the coverage a little so the edge is anti-aliased.
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0.6)[..., None]
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    canvas[y0:y1, x0:x1] = np.clip(rgb * alpha + region * (1 - alpha), 0, 255).astype(np.uint8)
    return face_box(style, centre, scale, yaw, pitch, roll, mouth_open)


def _draw_body(canvas, style, centre, scale, roll):
    """Shoulders, long hair behind, and neck: 2-D shapes that follow the head's position."""
    cx, cy = centre
    s16 = lambda x, y: (int(round(x * 16)), int(round(y * 16)))
    cloth = tuple(int(c) for c in style.cloth)
    cv2.ellipse(canvas, s16(cx, cy + 2.55 * scale), s16(1.9 * scale, 1.0 * scale), 0, 180, 360, cloth, -1, cv2.LINE_AA, 4)
    cv2.rectangle(canvas, s16(cx - 1.9 * scale, cy + 2.55 * scale), s16(cx + 1.9 * scale, canvas.shape[0] + 10), cloth, -1, cv2.LINE_AA, 4)
    if style.hair_style == "long":
        cv2.ellipse(canvas, s16(cx, cy + 0.5 * scale), s16(style.width * 1.2 * scale, 1.55 * scale), roll * 0.5, 0, 360,
                    tuple(int(c * 0.85) for c in style.hair), -1, cv2.LINE_AA, 4)
    neck = tuple(int(c * 0.72) for c in style.skin)
    w = style.jaw_width * 0.75 * scale
    pts = np.array([s16(cx - w, cy + 0.8 * scale), s16(cx + w, cy + 0.8 * scale),
                    s16(cx + w * 1.1, cy + 1.9 * scale), s16(cx - w * 1.1, cy + 1.9 * scale)], np.int32)
    cv2.fillPoly(canvas, [pts], neck, cv2.LINE_AA, 4)


@lru_cache(maxsize=64)
def _face_points(style: FaceStyle) -> tuple[np.ndarray, np.ndarray]:
    """3-D points outlining the region MediaPipe's face mesh covers (head coordinates, mouth
    closed), and which of them are on the jaw (they move down as the mouth opens)."""
    s = style
    pts, jaw = [], []
    # Cheek-to-cheek and forehead-to-chin outline on the cranium and jaw surfaces.
    top = s.hairline + 0.12
    for ang in np.linspace(-np.pi * 0.44, np.pi * 0.44, 23):
        for y in np.linspace(top, s.eye_y + 0.45, 6):
            k = 1 - y * y
            if k > 0:
                rx = s.width * np.sqrt(k)
                pts.append((rx * np.sin(ang), y, s.depth * np.sqrt(k) * np.cos(ang)))
                jaw.append(False)
    for ang in np.linspace(-np.pi * 0.44, np.pi * 0.44, 23):
        for dy in np.linspace(0.0, 0.5, 8):
            k = 1 - (dy / 0.52) ** 2
            rx = s.jaw_width * np.sqrt(k)
            pts.append((rx * np.sin(ang), s.jaw_drop + dy, 0.12 + s.depth * 0.72 * np.sqrt(k) * np.cos(ang)))
            jaw.append(True)
    pts.append((0.0, s.eye_y + 0.42, s.depth * 0.95 + 0.2))  # nose tip
    jaw.append(False)
    return np.array(pts), np.array(jaw)


def face_box(style: FaceStyle, centre, scale, yaw, pitch, roll, mouth_open) -> np.ndarray:
    """Projected extent of `_face_points` -- the ground-truth face box in pixels."""
    rot = head_rotation(yaw, pitch, roll)
    pts, jaw = _face_points(style)
    pts = pts + np.outer(jaw, [0.0, JAW_DROP * mouth_open, 0.0])
    p = pts @ rot.T
    xs = centre[0] + p[:, 0] * scale
    ys = centre[1] + p[:, 1] * scale
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)
