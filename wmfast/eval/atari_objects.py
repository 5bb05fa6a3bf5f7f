"""Where the player's paddle and the ball are in an Atari Pong or Breakout frame, at any frame size.

    objects = detect_objects(frames, "pong")      # frames [N, H, W, 3] uint8 (native 210x160 or resized)
    objects["paddle"], objects["ball_xy"], objects["balls"]

A resized frame blends each object into the background, so a pixel is read as the background plus
a share of each object colour (least squares over the game's object colours, clipped to [0, 1]).
The paddle's position is the share-weighted centroid inside the player's lane (Pong: its row, in
the right paddle's columns; Breakout: its column, in the paddle's rows); the ball is the
share-weighted centroid of the ball colour in the playfield, present when its share adds up to at
least half a ball. Positions are in pixels of the given frames (x right, y down, pixel centres at
+0.5). Regions are the native screen's, scaled to the frame size.

`ram_positions` reads the same objects from the console RAM an Atari recording keeps (wmfast.data.atari),
the reference `benchmarks/atari_detector.py` and the tests check the detector against.
"""
import numpy as np

from wmfast.errors import WmfastError

NATIVE = (210, 160)
# Native-screen facts per game: colours (RGB), the player's lane and the ball's playfield as
# (row0, row1, col0, col1), the ball's native area in pixels, and which axis the paddle moves along.
# lane_inside: read only the columns wholly inside the lane (Breakout's walls and corner blocks, read
# as paddle colour, bleed into its edge pixels; Pong's 4-pixel lane would vanish at 32 px).
GAMES = {
    "pong": {"background": (144, 72, 17), "colours": {"player": (92, 186, 92), "opponent": (213, 130, 74),
                                                      "ball": (236, 236, 236)},
             "lane": (34, 194, 140, 144), "lane_inside": False, "field": (34, 194, 0, 160), "ball_area": 8,
             "axis": "y",
             # RAM bytes: player paddle row, ball column, ball row
             "ram": {"paddle": 51, "ball_x": 49, "ball_y": 54}},
    "breakout": {"background": (0, 0, 0), "colours": {"player": (200, 72, 72)},
                 "lane": (189, 194, 8, 152), "lane_inside": True, "field": (93, 189, 8, 152), "ball_area": 8,
                 "axis": "x",
                 "ram": {"paddle": 72, "ball_x": 99, "ball_y": 101}},
}


def game_spec(game: str) -> dict:
    if game not in GAMES:
        raise WmfastError(f"no object detector for Atari game {game!r} (have: {', '.join(GAMES)})")
    return GAMES[game]


def object_shares(frames, game: str) -> dict:
    """frames [N, H, W, 3] uint8 -> {colour name: share [N, H, W] in [0, 1]}."""
    spec = game_spec(game)
    bg = np.asarray(spec["background"], np.float32)
    names = list(spec["colours"])
    basis = np.stack([np.asarray(spec["colours"][n], np.float32) - bg for n in names], 1)    # [3, K]
    x = np.asarray(frames, np.float32) - bg                                                 # [N, H, W, 3]
    shares = np.clip(x @ np.linalg.pinv(basis).T, 0.0, 1.0)                                  # [N, H, W, K]
    return {n: shares[..., k] for k, n in enumerate(names)}


def _span(lo: float, hi: float, scale: float, inside: bool) -> slice:
    """Native pixels [lo, hi) -> the frame pixels that touch them, or (inside) only those wholly in them."""
    a, b = lo * scale, hi * scale
    return slice(int(np.ceil(a - 1e-6)), int(np.floor(b + 1e-6))) if inside else \
        slice(int(np.floor(a + 1e-6)), int(np.ceil(b - 1e-6)))


def _region(box, shape, inside_rows: bool = False, inside_cols: bool = False):
    """A native (row0, row1, col0, col1) box -> row and column slices of a frame of shape [H, W]."""
    r0, r1, c0, c1 = box
    return (_span(r0, r1, shape[0] / NATIVE[0], inside_rows), _span(c0, c1, shape[1] / NATIVE[1], inside_cols))


def _centroid(weight, axis: int, offset: int) -> np.ndarray:
    """weight [N, a, b] -> share-weighted centre along axis 1 (rows) or 2 (cols) in pixels; nan where empty."""
    coords = np.arange(weight.shape[axis]) + offset + 0.5
    profile = weight.sum(axis=3 - axis)                                                     # [N, len]
    total = profile.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, profile @ coords / total, np.nan)


def detect_objects(frames, game: str) -> dict:
    """-> {"paddle": [N] paddle centre along its axis (nan: none seen), "ball_xy": [N, 2] ball centre
    (nan: none), "balls": [N] bool, a ball is there, "ball_mass": [N] its share in ball areas}."""
    spec = game_spec(game)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise WmfastError(f"detect_objects wants frames [N, H, W, 3] uint8, got shape {frames.shape}")
    shape = frames.shape[1:3]
    shares = object_shares(frames, game)
    lane_rows, lane_cols = _region(spec["lane"], shape, inside_cols=spec["lane_inside"])
    lane = shares["player"][:, lane_rows, lane_cols]
    if spec["axis"] == "y":
        paddle = _centroid(lane, 1, lane_rows.start)
    else:
        paddle = _centroid(lane, 2, lane_cols.start)
    field_rows, field_cols = _region(spec["field"], shape, inside_rows=True, inside_cols=True)
    ball = shares["ball" if "ball" in shares else "player"][:, field_rows, field_cols]
    if game == "pong":   # the paddles' columns hold no ball share worth reading (their colours bleed into it)
        ball = ball * (shares["player"][:, field_rows, field_cols] + shares["opponent"][:, field_rows, field_cols] < 0.5)
    area = spec["ball_area"] * shape[0] * shape[1] / (NATIVE[0] * NATIVE[1])
    mass = ball.sum((1, 2)) / area
    present = mass >= 0.5
    xy = np.stack([_centroid(ball, 2, field_cols.start), _centroid(ball, 1, field_rows.start)], 1)
    xy[~present] = np.nan
    return {"paddle": paddle, "ball_xy": xy, "balls": present, "ball_mass": mass}


def ram_positions(ram, game: str) -> dict:
    """ram [N, 128] uint8 -> the RAM's own coordinates: {"paddle": [N], "ball_xy": [N, 2]} (float)."""
    idx = game_spec(game)["ram"]
    ram = np.asarray(ram, np.float32)
    return {"paddle": ram[:, idx["paddle"]], "ball_xy": np.stack([ram[:, idx["ball_x"]], ram[:, idx["ball_y"]]], 1)}


def fit_ram_to_pixels(ram_values, pixels) -> tuple:
    """Least-squares (scale, offset) from a RAM coordinate to a pixel coordinate, on the pairs both see."""
    ok = np.isfinite(ram_values) & np.isfinite(pixels)
    if ok.sum() < 2:
        raise WmfastError("fewer than two frames where both the RAM and the detector see the object")
    scale, offset = np.polyfit(ram_values[ok], pixels[ok], 1)
    return float(scale), float(offset)
