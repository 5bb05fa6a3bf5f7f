"""Footage re-encodings (wmfast.data.footage) and training on them (ClipSampler augment)."""
import numpy as np
import pytest

from wmfast.data import ClipSampler, generate_game_dataset, load_dataset
from wmfast.data.footage import AUGMENTATIONS, VARIANTS, reencode, shift
from wmfast.errors import WmfastError


def psnr_u8(a, b) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) / 127.5) ** 2
    return float(10 * np.log10(4.0 / max(mse.mean(), 1e-10)))


@pytest.fixture(scope="module")
def maze(tmp_path_factory):
    path = tmp_path_factory.mktemp("footage") / "maze.h5"
    return load_dataset(generate_game_dataset("maze", 3, steps_per_episode=20, size=32, seed=4, out=path,
                                              progress=False))


def test_every_variant_keeps_the_clip_and_changes_it_a_little(maze):
    clips = np.asarray(maze.frames[0:10])[None].repeat(2, 0)           # [2, 10, 32, 32, 3]
    for variant in VARIANTS:
        out = reencode(clips, variant, np.random.default_rng(0))
        assert out.shape == clips.shape and out.dtype == np.uint8, variant
        assert not np.array_equal(out, clips), variant
        assert psnr_u8(out, clips) > (10 if variant == "shift1" else 18), variant
    assert psnr_u8(reencode(clips, "jpeg75", None), clips) > psnr_u8(reencode(clips, "jpeg40", None), clips)


def test_shift_moves_the_picture_and_repeats_the_edges():
    clip = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    down = shift(clip, 1, 0)
    assert np.array_equal(down[:, 1:], clip[:, :-1]) and np.array_equal(down[:, 0], clip[:, 0])
    left = shift(clip, 0, -1)
    assert np.array_equal(left[:, :, :-1], clip[:, :, 1:]) and np.array_equal(left[:, :, -1], clip[:, :, -1])


def test_bad_variants_and_shapes_are_one_line_errors():
    with pytest.raises(WmfastError, match="unknown footage variant 'png'"):
        reencode(np.zeros((1, 2, 8, 8, 3), np.uint8), "png", None)
    with pytest.raises(WmfastError, match="uint8 clips"):
        reencode(np.zeros((2, 8, 8, 3), np.uint8), "jpeg40", None)
    with pytest.raises(WmfastError, match="even"):
        reencode(np.zeros((1, 2, 7, 7, 3), np.uint8), "h264", None)


def test_training_clips_are_reencoded_by_seed_step_and_clip(maze):
    plain = ClipSampler(maze, clip_len=4, frame_size=32, seed=2)
    never = ClipSampler(maze, clip_len=4, frame_size=32, seed=2, augment=AUGMENTATIONS, augment_prob=0.0)
    always = ClipSampler(maze, clip_len=4, frame_size=32, seed=2, augment="jpeg40,shift1", augment_prob=1.0)
    clean = plain.batch_at(5, 8)[0]
    assert np.array_equal(never.batch_at(5, 8)[0], clean)
    once, again = always.batch_at(5, 8)[0], always.batch_at(5, 8)[0]
    assert np.array_equal(once, again)
    assert all(not np.array_equal(once[j], clean[j]) for j in range(8))
    # Two processes together draw the same global batch as one.
    halves = [always.batch_at(5, 8, rank=r, world_size=2)[0] for r in (0, 1)]
    assert np.array_equal(np.concatenate(halves), once)
    # Evaluation clips are never re-encoded.
    assert np.array_equal(always.clips_at(np.array([0, 3]))[0], plain.clips_at(np.array([0, 3]))[0])
    with pytest.raises(WmfastError, match="h264"):
        ClipSampler(maze, clip_len=4, frame_size=32, augment="h264")


def test_train_config_names_an_unknown_augmentation():
    from wmfast.train import TrainConfig

    assert TrainConfig(augment="jpeg75, shift1").validate().augment == "jpeg75, shift1"
    with pytest.raises(WmfastError, match="unknown footage variant 'blur'"):
        TrainConfig(augment="blur").validate()
