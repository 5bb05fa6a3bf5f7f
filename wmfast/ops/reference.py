"""Plain PyTorch references for every wmfast op: the oracle every kernel is tested against."""
import torch  # noqa: F401


# -- pair_attention -----------------------------------------------------------------------------
def pair_windows(x):
    """[B, T, P, ...] -> [B, T-1, 2P, ...]: window t is frames t and t+1 (a concatenated copy)."""
    return torch.cat([x[:, :-1], x[:, 1:]], dim=2)


def pair_attention_reference(q, k, v, pool: bool = False, scale=None, return_lse: bool = False):
    """Full attention inside each window of two consecutive frames, written out plainly.

    q, k, v [B, T, P, H, D] -> [B, T-1, 2P, H, D], or the mean over the window's 2P queries
    [B, T-1, H, D] with pool=True; with return_lse also the log-sum-exp of the scaled scores
    [B, H, T-1, 2P]. Computes in the input dtype (pass float64 for an oracle)."""
    D = q.shape[-1]
    scale = D ** -0.5 if scale is None else scale
    qw, kw, vw = (pair_windows(x).permute(0, 1, 3, 2, 4) for x in (q, k, v))   # [B, W, H, 2P, D]
    s = torch.matmul(qw, kw.transpose(-1, -2)) * scale                        # [B, W, H, 2P, 2P]
    lse = torch.logsumexp(s, dim=-1)                                          # [B, W, H, 2P]
    out = torch.matmul(torch.exp(s - lse.unsqueeze(-1)), vw)                  # [B, W, H, 2P, D]
    out = out.permute(0, 1, 3, 2, 4)                                          # [B, W, 2P, H, D]
    if pool:
        out = out.mean(dim=2)                                                 # [B, W, H, D]
    return (out, lse.permute(0, 2, 1, 3)) if return_lse else out


# -- vq_lookup ----------------------------------------------------------------------------------
def vq_lookup_reference(z, codebook, chunk_elements: int = 1 << 24):
    """Nearest codebook row by squared L2, written plainly (matmul expansion + argmin).

    z [..., D], codebook [K, D] -> (indices int64 [...], quantized [..., D] = codebook[indices],
    distances fp32 [...] = ||z - codebook[indices]||^2). Searches on ||c||^2 - 2 z.c in fp32
    (fp64 for fp64 inputs); ties go to the lowest index (torch.argmin's rule). Rows are
    processed in chunks of at most `chunk_elements` scores, so memory stays bounded."""
    D = codebook.shape[-1]
    work = torch.float64 if codebook.dtype == torch.float64 else torch.float32
    flat = z.reshape(-1, D).to(work)                                  # [N, D]
    cb = codebook.to(work)                                            # [K, D]
    c2 = (cb * cb).sum(-1)                                            # [K]
    rows = max(1, chunk_elements // max(1, cb.shape[0]))
    idx = torch.cat([(c2 - 2 * part @ cb.T).argmin(-1) for part in flat.split(rows)]) if flat.shape[0] \
        else torch.zeros(0, dtype=torch.long, device=z.device)        # [N]
    quantized = codebook.index_select(0, idx)                         # [N, D]
    dist = (flat - quantized.to(work)).pow(2).sum(-1).float()         # [N]
    lead = z.shape[:-1]
    return idx.reshape(lead), quantized.reshape(*lead, D), dist.reshape(lead)


def vq_lookup_exact(z, codebook):
    """Brute-force float64 oracle for tests: all squared distances [N, K] (no expansion), so
    there is no cancellation error. z [..., D] -> [N, K] with N = z[..., 0].numel()."""
    D = codebook.shape[-1]
    diff = z.reshape(-1, 1, D).double() - codebook.double()[None]    # [N, K, D]
    return diff.pow(2).sum(-1)                                        # [N, K]
