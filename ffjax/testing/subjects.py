"""Face subjects for generated videos: procedurally drawn faces and real faces from scikit-image.

A subject is an RGB image of the face box's content. Every subject follows one canonical
layout (eyes at 40 % of the height, mouth at 72 %), so manipulations can target the eyes and
mouth of any subject, drawn or real, without a landmark detector.
"""

from __future__ import annotations

import cv2
import numpy as np

# Face box width / height, and where the features sit as fractions of the face box.
FACE_ASPECT = 0.85
LEFT_EYE = (0.30, 0.40)
RIGHT_EYE = (0.70, 0.40)
MOUTH = (0.50, 0.72)
# The astronaut's face box in skimage.data.astronaut() (512 px): rows, columns. Tighter than
# the whole head so her eyes and mouth land on the canonical positions above.
ASTRONAUT_FACE = (slice(45, 190), slice(165, 285))
# lfw_subset(): the first 100 of its 200 25x25 crops are faces, the rest are not.
LFW_NUM_FACES = 100

_CANVAS = (102, 120)  # procedural face drawn at this (width, height), then resized per frame
_SUPERSAMPLE = 4  # drawn this many times larger and area-averaged down, for smooth edges


def _fixed(canvas_size, fx: float, fy: float) -> tuple[int, int]:
    """Fractions of the canvas in cv2's 4-bit fixed point (sub-pixel drawing)."""
    return (round(fx * canvas_size[0] * 16), round(fy * canvas_size[1] * 16))


def _ellipse(img, size, centre, axes, colour, angle: float = 0.0) -> None:
    """Draws a filled anti-aliased ellipse given in canvas fractions."""
    colour = tuple(float(v) for v in colour)  # cv2 wants Python numbers
    cv2.ellipse(img, _fixed(size, *centre), _fixed(size, *axes), angle, 0, 360, colour, -1,
                cv2.LINE_AA, 4)


def draw_face(rng: np.random.Generator) -> np.ndarray:
    """Draws a random cartoon face filling its face box (skin, hair, eyes, brows, nose, mouth).

    The face has soft 3-D shading and a faint skin texture, so blurring or re-rendering it
    (what the manipulations do) changes its high frequencies, as it does in real fakes.

    Args:
      rng: source of the face's random appearance.

    Returns:
      uint8 [120, 102, 3] RGB face image in the canonical layout.
    """
    size = (_CANVAS[0] * _SUPERSAMPLE, _CANVAS[1] * _SUPERSAMPLE)
    skin = np.array([rng.uniform(120, 235), 0, 0])
    skin[1] = skin[0] * rng.uniform(0.68, 0.85)
    skin[2] = skin[1] * rng.uniform(0.7, 0.9)
    hair = rng.uniform(15, 120) * np.array([1.0, rng.uniform(0.6, 0.9), rng.uniform(0.4, 0.8)])
    iris = rng.uniform(30, 140, 3)
    lips = skin * np.array([
        rng.uniform(0.75, 0.95), rng.uniform(0.45, 0.6), rng.uniform(0.5, 0.65)
    ])
    img = np.empty((size[1], size[0], 3), np.uint8)
    img[:] = hair.astype(np.uint8)
    _ellipse(img, size, (0.5, 0.58), (0.42, 0.46), skin)
    # Hair: a cap over the forehead with a random parting angle.
    _ellipse(img, size, (0.5, 0.1), (0.52, rng.uniform(0.14, 0.22)), hair, rng.uniform(-8, 8))
    for eye in (LEFT_EYE, RIGHT_EYE):
        side = -1 if eye is LEFT_EYE else 1
        # Shadowed eye sockets and full brows: the dark-band-over-bright-cheeks pattern a
        # HOG face detector keys on (thin brows over an unshaded face are often missed).
        _ellipse(img, size, (eye[0], eye[1] - 0.01), (0.13, 0.07), skin * 0.72)
        brow = (eye[0], eye[1] - rng.uniform(0.07, 0.1))
        _ellipse(img, size, brow, (0.12, 0.03), hair * 0.6, side * rng.uniform(3, 10))
        _ellipse(img, size, eye, (0.09, 0.04), (235.0, 235.0, 230.0))
        _ellipse(img, size, eye, (0.04, 0.034), iris)
        _ellipse(img, size, eye, (0.018, 0.015), (15.0, 10.0, 10.0))
    _ellipse(img, size, (0.5, 0.55), (0.035, 0.09), skin * 0.88)
    _ellipse(img, size, (0.5, 0.615), (0.07, 0.025), skin * 0.7)
    _ellipse(img, size, MOUTH, (rng.uniform(0.11, 0.16), rng.uniform(0.03, 0.05)), lips)
    _ellipse(img, size, MOUTH, (0.1, 0.006), lips * 0.45)
    img = cv2.resize(img, _CANVAS, interpolation=cv2.INTER_AREA).astype(np.float32)
    # Lambertian shading of an ellipsoid lit from the upper left gives the face depth.
    h, w = img.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    nx, ny = (x + 0.5) / w * 2 - 1, (y + 0.5) / h * 2 - 1
    nz = np.sqrt(np.clip(1 - 0.6 * (nx**2 + ny**2), 0, 1))
    light = np.array([-0.35, -0.45, 0.82])
    shade = 0.55 + 0.5 * np.clip(light[0] * nx + light[1] * ny + light[2] * nz, 0, 1)
    texture = cv2.GaussianBlur(rng.normal(0, 6, (h, w)).astype(np.float32), (0, 0), 0.8)
    img = img * shade[..., None] + texture[..., None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def as_subject(image, index: int) -> np.ndarray:
    """Checks a user-given face image and returns it as uint8 RGB.

    Args:
      image: uint8 [H, W, 3] RGB or [H, W] grey face image (any size >= 8x8), or a float
        image in [0, 1] (as scikit-image returns some).
      index: its position in `subjects`, for the error message.

    Returns:
      uint8 [H, W, 3] RGB.
    """
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.floating):
        if image.size and (image.min() < 0 or image.max() > 1):
            raise ValueError(f"subjects[{index}]: float images must lie in [0, 1].")
        image = np.rint(image * 255).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"subjects[{index}]: expected a uint8 RGB image, got dtype {image.dtype}.")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 8:
        raise ValueError(
            f"subjects[{index}]: expected an RGB image [H, W, 3] (or grey [H, W]) of at least "
            f"8x8 pixels, got shape {image.shape}."
        )
    return np.ascontiguousarray(image)


def skin_colour(face: np.ndarray) -> np.ndarray:
    """Mean colour of the cheeks and nose of a canonical face image (for the neck).

    Args:
      face: uint8 [H, W, 3] face image.

    Returns:
      float32 [3] RGB.
    """
    h, w = face.shape[:2]
    r0, c0 = int(0.48 * h), int(0.35 * w)
    patch = face[r0 : max(int(0.62 * h), r0 + 1), c0 : int(0.65 * w) + 1]
    return patch.reshape(-1, 3).mean(0).astype(np.float32)


def default_real_subjects() -> list[np.ndarray]:
    """Real faces that ship with scikit-image: the astronaut's face and the 100 LFW faces.

    Returns:
      101 uint8 RGB images in the canonical face layout: the astronaut crop (145x120)
      first, then the LFW faces (25x25, grey replicated to RGB).
    """
    from skimage import data  # deferred: only the demo and tests need it

    faces = [np.ascontiguousarray(data.astronaut()[ASTRONAUT_FACE])]
    lfw = data.lfw_subset()[:LFW_NUM_FACES]
    faces += [as_subject(face, i + 1) for i, face in enumerate(lfw)]
    return faces
