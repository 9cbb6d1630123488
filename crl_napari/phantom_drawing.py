"""One synthetic chest radiograph phantom, drawn from a seed (the sample set's cases: crl_napari.phantoms).

A phantom is a frontal (PA) chest radiograph as the detector sees it (patient's left on the image's right): a
torso with neck, shoulders and arms, two lung fields (dark, smooth irregular shapes; the image-right lung is
smaller and carries the cardiac notch), the heart (a bright blob over the medial side of the image-right lung),
mediastinum, trachea, spine, faint ribs crossing the lungs, clavicles, hila and vascular markings, diaphragm
domes with an optional gastric air bubble, a smooth exposure gradient, blur and film grain.

The true lung mask is the two lung fields minus the heart (and the aortic knob). Sizes, positions, the
left/right asymmetry, the heart and the grey levels vary moderately from case to case, so that a small U-Net
learns the lungs at 128 x 128 in a few CPU minutes but has to look past ribs, heart and noise.

All geometry is written in image-relative coordinates, so a phantom at another ``size`` is the same anatomy
resampled. One drawing (each anatomical part placed relative to the others), read top to bottom.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["PHANTOM_VERSION", "make_phantom", "phantom_layers"]

#: Bumped whenever the drawing changes, so a cached set from an older version is regenerated.
PHANTOM_VERSION = 1


def _smooth_field(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, amp: float, terms: int = 5,
                  fmax: float = 3.0) -> np.ndarray:
    """A smooth random field (sum of low-frequency plane waves) with standard deviation about ``amp``.

    Defined on image-relative coordinates, so it does not depend on the pixel size."""
    out = np.zeros_like(u)
    for _ in range(terms):
        fx, fy = rng.uniform(-fmax, fmax, size=2)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        out += np.sin(2.0 * np.pi * (fx * u + fy * v) + phase)
    return out * (amp * np.sqrt(2.0 / terms))


def _band(dist: np.ndarray, half_width: float, soft: float) -> np.ndarray:
    """1 inside |dist| < half_width, falling smoothly to 0 over ``soft`` (a blurred stripe)."""
    return np.clip((half_width - np.abs(dist)) / soft + 0.5, 0.0, 1.0)


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, au: float, av: float,
             angle: float = 0.0) -> np.ndarray:
    """Normalised squared radius of a rotated ellipse (< 1 inside)."""
    c, s = np.cos(angle), np.sin(angle)
    du, dv = u - cu, v - cv
    x = (c * du + s * dv) / au
    y = (-s * du + c * dv) / av
    return x * x + y * y


def _lung_field(d: np.ndarray, v: np.ndarray, p: dict) -> np.ndarray:
    """Boolean lung field on one side; ``d`` is the distance from the midline towards that side.

    Rounded apex at (apex_d, top), medial border running down the mediastinum, convex lateral border,
    sharp costophrenic angle at ``bot`` and a diaphragm dome rising ``dome`` above it."""
    top, bot = p["top"], p["bot"]
    t = (v - top) / (bot - top)
    tc = np.clip(t, 0.0, 1.0)
    d_med = p["med"] + (p["apex_d"] - p["med"]) * (1.0 - np.sqrt(np.clip(tc / 0.28, 0.0, 1.0)))
    d_med = d_med + p["med_slope"] * tc  # the mediastinum widens downwards
    d_lat = p["apex_d"] + (p["lat"] - p["apex_d"]) * np.sqrt(np.clip(tc / 0.55, 0.0, 1.0))
    d_lat = d_lat + p["bulge"] * np.sin(np.pi * tc)
    s = np.clip((d - d_med) / np.maximum(d_lat - d_med, 1e-6), 0.0, 1.0)
    v_dia = bot - p["dome"] * np.exp(-(((s - p["dome_peak"]) / 0.38) ** 2))
    return (t >= 0.0) & (d >= d_med) & (d <= d_lat) & (v <= v_dia)


def _draw(seed: int, size: int) -> dict[str, np.ndarray]:
    """Draw one phantom; returns the image, the mask and the anatomical masks used (for tests/debug)."""
    if int(size) != size or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    size = int(size)
    rng = np.random.default_rng(np.random.SeedSequence([PHANTOM_VERSION, int(seed)]))
    px = 1.0 / size  # one pixel in image-relative units
    k = size / 256.0  # pixel scale for the blurs
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    u, v = np.meshgrid(coords, coords)  # u: left -> right, v: top -> bottom

    # ---- case parameters (moderate variation)
    mid = 0.5 + rng.uniform(-0.02, 0.02)
    scale = rng.uniform(0.92, 1.06)  # overall chest size
    shift_v = rng.uniform(-0.025, 0.025)
    body_w = 0.455 * scale + rng.uniform(-0.01, 0.015)

    def lung_params() -> dict:
        return {
            "top": 0.165 + shift_v + rng.uniform(-0.015, 0.015),
            "bot": 0.5 + 0.3 * scale + shift_v + rng.uniform(-0.02, 0.02),
            "apex_d": 0.17 * scale + rng.uniform(-0.01, 0.01),
            "med": 0.055 + rng.uniform(-0.008, 0.01),
            "med_slope": 0.015 + rng.uniform(-0.005, 0.01),
            "lat": 0.355 * scale + rng.uniform(-0.012, 0.012),
            "bulge": rng.uniform(0.0, 0.02),
            "dome": rng.uniform(0.07, 0.12),
            "dome_peak": rng.uniform(0.3, 0.5),
        }

    # image left = the patient's right lung; the patient's left lung (image right) is narrower, its
    # hemidiaphragm lower, and the heart takes its medial base (the cardiac notch)
    right_p, left_p = lung_params(), lung_params()
    left_p["bot"] = right_p["bot"] + rng.uniform(0.01, 0.035)
    left_p["lat"] = right_p["lat"] - rng.uniform(0.02, 0.04)
    left_p["top"] = right_p["top"] + rng.uniform(0.0, 0.012)
    left_p["apex_d"] = right_p["apex_d"] - rng.uniform(0.0, 0.015)
    left_p["med_slope"] -= 0.015
    lungs_p = {"image_left": right_p, "image_right": left_p}

    # ---- body: superelliptic trunk with sloping shoulders, neck, arms alongside
    trunk_cv = 0.74 + shift_v
    trunk = np.abs((u - mid) / body_w) ** 2.6 + np.abs((v - trunk_cv) / (0.68 * scale)) ** 4.0 < 1.0
    neck = (np.abs(u - mid) < 0.09 * scale) & (v < trunk_cv)
    arm_l = _ellipse(u, v, mid - body_w - 0.03, 0.58 + shift_v, 0.08, 0.5) < 1.0
    arm_r = _ellipse(u, v, mid + body_w + 0.03, 0.58 + shift_v, 0.08, 0.5) < 1.0
    body = trunk | neck
    arms = (arm_l | arm_r) & ~body

    # ---- lungs (with a smooth random warp for irregular outlines)
    warp_u = _smooth_field(rng, u, v, 0.010)
    warp_v = _smooth_field(rng, u, v, 0.010)
    uw, vw = u + warp_u, v + warp_v
    lung_l = _lung_field(mid - uw, vw, lungs_p["image_left"])
    lung_r = _lung_field(uw - mid, vw, lungs_p["image_right"])
    lungs = (lung_l | lung_r) & body

    # ---- heart (over the medial side of the image-right lung) and aortic knob
    heart_cu = mid + rng.uniform(0.045, 0.075) * scale
    heart_cv = lungs_p["image_right"]["bot"] - rng.uniform(0.115, 0.14) * scale
    heart_au = rng.uniform(0.145, 0.17) * scale
    heart_av = rng.uniform(0.105, 0.125) * scale
    heart_angle = np.deg2rad(rng.uniform(15.0, 35.0))
    heart_r2 = _ellipse(u, v, heart_cu, heart_cv, heart_au, heart_av, heart_angle)
    heart = heart_r2 < 1.0
    knob = _ellipse(u, v, mid + 0.045 * scale, lungs_p["image_right"]["top"] + 0.17, 0.045, 0.05) < 1.0
    mediastinal = heart | knob

    mask_f = ndimage.gaussian_filter((lungs & ~mediastinal).astype(np.float64), 1.5 * k)
    mask = (mask_f > 0.5).astype(np.uint8)

    # ---- attenuation map (bright = dense), then grey levels
    blur = ndimage.gaussian_filter
    body_s = blur(body.astype(np.float64), 1.5 * k)
    arms_s = blur(arms.astype(np.float64), 2.0 * k)
    lungs_s = blur(lungs.astype(np.float64), 1.7 * k)
    heart_s = blur(heart.astype(np.float64), 1.6 * k)
    knob_s = blur(knob.astype(np.float64), 1.5 * k)

    background = rng.uniform(0.06, 0.16)
    soft = rng.uniform(0.62, 0.7)
    img = np.full_like(u, background)
    img += (soft - background) * body_s + (soft - 0.05 - background) * arms_s
    # tissue seen tangentially at the flanks is thicker; the abdomen below the domes is denser
    img += 0.12 * body_s * np.clip(np.abs(u - mid) / body_w, 0.0, 1.0) ** 4
    img += 0.06 * body_s * np.clip((v - 0.55 - shift_v) / 0.4, 0.0, 1.0)

    # lungs: air is dark; apices and bases less so; retrocardiac lung partly hidden by the heart
    depth = rng.uniform(0.27, 0.34)
    t_all = np.clip((v - lungs_p["image_left"]["top"]) / 0.62, 0.0, 1.0)
    profile = 0.7 + 0.3 * np.sin(np.pi * np.clip(t_all * 1.1, 0.0, 1.0)) ** 0.6
    profile *= 0.8 + 0.2 * np.clip((np.abs(u - mid) - 0.06) / 0.2, 0.0, 1.0)  # lighter near the hila
    img -= depth * lungs_s * profile * (1.0 - 0.85 * heart_s)
    img += 0.05 * heart_s + 0.03 * knob_s

    # hila and vascular markings (denser near the hila, fading to the periphery)
    hilum_v = 0.43 + shift_v
    for side in (-1.0, 1.0):
        hil = _ellipse(u, v, mid + side * 0.1 * scale, hilum_v + rng.uniform(-0.02, 0.02), 0.05, 0.08)
        img += rng.uniform(0.05, 0.09) * lungs_s * np.exp(-hil)
    vessels = blur(rng.standard_normal(u.shape), 1.6 * k)
    vessels /= vessels.std() + 1e-9
    near_hilum = np.exp(-np.abs(np.abs(u - mid) - 0.1) / 0.12)
    img += 0.045 * lungs_s * (1.0 - heart_s) * near_hilum * np.clip(vessels, -1.0, 2.5)

    # trachea (air, dark) and spine (bright band with faint vertebral bodies)
    trachea = _band(u - mid - 0.004, 0.019, 2.0 * px) * (v < lungs_p["image_left"]["top"] + 0.2)
    img -= 0.1 * blur(trachea, 1.2 * k) * body_s
    spine = _band(u - mid, 0.045 * scale, 3.0 * px)
    vert_period = 0.05 * scale
    vertebrae = 0.5 + 0.5 * np.cos(2.0 * np.pi * (v - shift_v) / vert_period)
    img += spine * body_s * (0.06 + 0.03 * vertebrae ** 4)

    # ribs: posterior ribs leave the spine, rise a little, then sweep down the lateral wall; anterior ribs
    # run from the lateral wall down towards the sternum and are fainter
    rib_amp = rng.uniform(0.04, 0.055)
    ribs = np.zeros_like(u)
    first = lungs_p["image_left"]["top"] - 0.035 + rng.uniform(-0.01, 0.01)
    spacing = rng.uniform(0.06, 0.068) * scale
    for side in (-1.0, 1.0):
        d = side * (u - mid)
        lat = lungs_p["image_left" if side < 0 else "image_right"]["lat"] + 0.05
        x = np.clip((d - 0.03) / (lat - 0.03), 0.0, 1.1)
        side_ribs = np.zeros_like(u)
        for i in range(10):
            v0 = first + i * spacing
            curve = 0.12 + 0.01 * i
            centre = v0 + curve * (-0.5 * x + 1.3 * x**2)
            half = (0.009 + 0.004 * x) * scale
            stripe = _band(v - centre, half, 2.0 * px)
            cortex = _band(np.abs(v - centre) - half, 0.002, 1.0 * px)  # brighter rims
            side_ribs += stripe * (0.6 + 0.4 * np.clip(x, 0, 1)) + 0.3 * cortex
            va = v0 + 0.06 + 0.16 * np.clip(1.0 - x, 0.0, 1.0) ** 1.3
            side_ribs += 0.3 * _band(v - va, 0.01 * scale, 3.0 * px) * ((x > 0.3) & (x < 1.0))
        ribs += side_ribs * ((d > 0.025) & (d < lat + 0.01))
    img += rib_amp * ribs * body_s * (0.5 + 0.5 * lungs_s) * (v < lungs_p["image_right"]["bot"] + 0.02)

    # clavicles: from the sternal notch up and out to the shoulders, a gentle S
    clav = np.zeros_like(u)
    for side in (-1.0, 1.0):
        d = side * (u - mid)
        x = np.clip((d - 0.035) / 0.3, 0.0, 1.0)
        centre = lungs_p["image_left"]["top"] + 0.06 - 0.09 * x + 0.012 * np.sin(2.0 * np.pi * x)
        clav += _band(v - centre, 0.015 * scale, 1.5 * px) * ((d > 0.035) & (d < 0.38))
    img += rng.uniform(0.12, 0.16) * clav * body_s

    # gastric air bubble under the left hemidiaphragm (in half of the cases)
    if rng.random() < 0.5:
        bubble = _ellipse(u, v, mid + 0.2 * scale, lungs_p["image_right"]["bot"] + 0.04, 0.055, 0.03)
        img -= 0.12 * blur((bubble < 1.0).astype(np.float64), 1.5 * k) * (1.0 - lungs_s)

    # exposure: smooth gradient and low-frequency unevenness, contrast and brightness
    grad = 1.0 + rng.uniform(-0.07, 0.07) * (u - 0.5) + rng.uniform(-0.05, 0.1) * (v - 0.5)
    img = img * grad + _smooth_field(rng, u, v, 0.015, fmax=1.5)
    img = blur(img, 0.9 * k)
    gain = rng.uniform(0.9, 1.1)
    img = 0.5 + gain * (img - 0.5) + rng.uniform(-0.04, 0.04)

    # film grain (slightly correlated) plus a little white noise
    grain = blur(rng.standard_normal(u.shape), 0.7 * k)
    grain /= grain.std() + 1e-9
    img += rng.uniform(0.015, 0.025) * grain + 0.008 * rng.standard_normal(u.shape)

    image = np.clip(np.round(np.clip(img, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
    return {"image": image, "mask": mask, "heart": heart, "lungs": lungs, "body": body}


def make_phantom(seed: int, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic chest radiograph and its true lung mask, deterministic for ``seed``.

    Returns ``(image, mask)``: image uint8 (size, size), lungs dark and bone / soft tissue bright;
    mask uint8 {0, 1}, the two lung fields minus the heart.
    """
    out = _draw(seed, size)
    return out["image"], out["mask"]


def phantom_layers(seed: int, size: int = 256) -> dict[str, np.ndarray]:
    """The phantom with its anatomy: keys image, mask and the boolean heart, lungs (fields), body."""
    return _draw(seed, size)
