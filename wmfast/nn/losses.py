"""Reconstruction losses shared by the models that predict the next frame."""
import torch.nn.functional as F


def changed_mask(x0, x1, dilate: int = 0):
    """[B, C, H, W] x 2 -> float [B, 1, H, W]: 1 where any channel changed (by > half a grey level),
    grown by `dilate` pixels so the loss also sees where a moving object's edges should be."""
    changed = ((x1 - x0).abs().amax(1, keepdim=True) > 0.5 / 255).float()
    if dilate:
        changed = F.max_pool2d(changed, 2 * dilate + 1, stride=1, padding=dilate)
    return changed


def change_weighted_mse(err, x0, x1, weight: float, dilate: int = 0):
    """Squared error err [B, C, H, W] with the pixels that change from x0 to x1 weighted `weight`,
    normalised by the mean weight so the loss stays on the MSE's scale. Why: a moving ball and paddle
    are ~0.1% of an Atari frame's pixels, so under a plain MSE the decoder ignores them and the code
    never has to carry the change."""
    w = 1 + (weight - 1) * changed_mask(x0.float(), x1.float(), dilate)
    return (err * w).mean() / w.mean()
