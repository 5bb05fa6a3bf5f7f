"""The Atari object detector (wmfast.eval.atari_objects) against the console RAM, on real frames.

    python benchmarks/atari_detector.py [--seed 5] [--steps 400] [--json FILE]

Per game: two episodes recorded natively (210x160, wmfast.data.atari, i.i.d. actions), the frames
also area-resized to 64 and 32 px. On episode 0 a linear map from each RAM coordinate (paddle,
ball x, ball y) to the detector's pixel coordinate is fitted; on episode 1 the detector's distance
from the mapped RAM position is reported (median and p90, in pixels of that frame size), with the
share of frames where the detector sees a ball at each size against the native one.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from wmfast.data import load_dataset  # noqa: E402
from wmfast.data.atari import generate_atari_dataset  # noqa: E402
from wmfast.data.dataset import read_array  # noqa: E402
from wmfast.data.frames import resize_uint8  # noqa: E402
from wmfast.eval.atari_objects import detect_objects, fit_ram_to_pixels, ram_positions  # noqa: E402


def detector_errors(game: str, seed: int, steps: int, sizes=(0, 64, 32)) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        path = generate_atari_dataset(game, 2, size=0, seed=seed, max_steps=steps, out=os.path.join(tmp, "a.h5"),
                                      progress=False)
        ds = load_dataset(path)
        frames, ram = np.asarray(ds.frames[:]), read_array(path, "ram")
    ref = ram_positions(ram, game)
    (s0, e0), (s1, e1) = ds.episodes
    rows = []
    for size in sizes:
        det = detect_objects(frames if size == 0 else resize_uint8(frames, size), game)
        row = {"game": game, "size": size or "native 210x160", "fit_frames": e0 - s0, "test_frames": e1 - s1,
               "ball_seen_share": float(det["balls"][s1:e1].mean())}
        for key, r, d in (("paddle", ref["paddle"], det["paddle"]), ("ball_x", ref["ball_xy"][:, 0], det["ball_xy"][:, 0]),
                          ("ball_y", ref["ball_xy"][:, 1], det["ball_xy"][:, 1])):
            scale, offset = fit_ram_to_pixels(r[s0:e0], d[s0:e0])
            err = np.abs(scale * r[s1:e1] + offset - d[s1:e1])
            err = err[np.isfinite(err)]
            row[key] = {"median_px": float(np.median(err)), "p90_px": float(np.percentile(err, 90)),
                        "frames": int(len(err)), "ram_to_px": [scale, offset]}
        rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                   "atari-detector.json"))
    a = ap.parse_args(argv)
    rows = [r for game in ("pong", "breakout") for r in detector_errors(game, a.seed, a.steps)]
    for r in rows:
        print(f"{r['game']:8s} {str(r['size']):15s} ball seen {r['ball_seen_share']:.2f}  " + "  ".join(
            f"{k} {r[k]['median_px']:.2f}/{r[k]['p90_px']:.2f} px" for k in ("paddle", "ball_x", "ball_y")))
    import ale_py

    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"what": __doc__.strip().splitlines()[0], "errors": "median / p90 px on the test episode",
                   "seed": a.seed, "steps": a.steps, "ale_py": ale_py.__version__, "rows": rows}, f, indent=1)
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
