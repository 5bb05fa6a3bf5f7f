"""wmfast.World against the reference rollout (random-init models of a few shapes, CPU)."""
import pytest
import torch

from wmfast import World, WmfastError
from wmfast.nn.pe import temporal_pe
from wmfast.models.dynamics import MAX_EXTRA_STEPS, choose_tokens
from wmfast.rollout.backends import BACKENDS, TorchBackend, register_backend
from wmfast.rollout.reference import reference_rollout, reference_token_rollout
from wmfast.rollout.shapes import random_world_model

# (model sizes, MaskGIT steps): non-default frame and patch sizes, 1-3 blocks, other contexts.
SHAPES = [
    (dict(frame_size=32, patch_size=4, embed_dim=32, num_heads=4, hidden_dim=64, num_blocks=2,
          latent_dim=3, num_bins=4, n_actions=8, context_length=3), 6),
    (dict(frame_size=24, patch_size=6, embed_dim=48, num_heads=4, hidden_dim=64, num_blocks=3,
          latent_dim=2, num_bins=5, n_actions=4, context_length=2), 4),
    (dict(frame_size=16, patch_size=2, embed_dim=24, num_heads=2, hidden_dim=48, num_blocks=1,
          latent_dim=4, num_bins=3, n_actions=2, context_length=4), 10),
]
SMALL = SHAPES[0][0]



def frames_for(model, batch, count, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = model.frame_size
    return torch.rand(batch, count, 3, S, S, generator=g) * 2 - 1


def ids_for(model, batch, count, seed=0):
    g = torch.Generator().manual_seed(seed + 100)
    return torch.randint(0, model.lam.num_actions, (batch, count), generator=g)


@pytest.mark.parametrize("shape", range(len(SHAPES)))
@pytest.mark.parametrize("seed", [0, 1])
def test_compat_equals_reference_frame_for_frame(shape, seed):
    sizes, steps = SHAPES[shape]
    model = random_world_model(**sizes, seed=seed)
    C = sizes["context_length"]
    for t0 in sorted({1, C, C + 2}):                       # window filling up, full, and longer than C
        context, ids = frames_for(model, 2, t0, seed), ids_for(model, 2, 5, seed)
        want = reference_rollout(model, context, ids, steps=steps)                 # [B, N, 3, H, W]
        world = World(model, device="cpu", mode="compat", steps=steps).reset(context)
        for i in range(ids.shape[1]):
            assert torch.equal(world.step(ids[:, i]), want[:, i]), f"frame {i} differs (t0={t0})"


def test_backend_registry_and_protocol_check():
    model = random_world_model(**SMALL)
    assert isinstance(World(model, device="cpu").backend, TorchBackend)
    with pytest.raises(WmfastError, match="lacks"):
        World(model, device="cpu", backend=object())
    register_backend("mine", lambda m, device, options=None: TorchBackend.create(m, device))
    try:
        context, ids = frames_for(model, 2, 3), ids_for(model, 2, 2)
        want = World(model, device="cpu", steps=3).reset(context).rollout(ids)
        assert torch.equal(World(model, device="cpu", backend="mine", steps=3).reset(context).rollout(ids), want)
    finally:
        BACKENDS.pop("mine")


def test_prefill_extend_equal_the_uncached_forward():
    model = random_world_model(**SMALL)
    dyn, dec = model.dynamics, model.tokenizer.decoder
    B, T, P, L = 2, 4, dyn.config.num_patches, dyn.config.latent_dim
    lat = model.tokenizer.quantizer.latents(torch.randint(0, dyn.config.codebook_size, (B, T, P)))
    act = torch.randn(B, T - 1, dyn.config.conditioning_dim)
    pe = temporal_pe(T, dyn.config.embed_dim)
    with torch.no_grad():
        full = dyn.logits(lat, act)                                                # [B, T, P, K]
        cache = dyn.prefill(lat[:, :-1], act[:, :-1], dyn.new_cache(B, 5), pe[:-1])   # 3 of 5 slots valid
        assert cache.valid.tolist() == [True, True, True, False, False]
        last, kv = dyn.extend(lat[:, -1:], act[:, -1:], cache.k, cache.v, cache.valid, pe[-1:])
        torch.testing.assert_close(last[:, 0], full[:, -1], atol=1e-5, rtol=1e-5)
        assert kv[0].shape == (len(dyn.transformer.blocks), B, P, 4, 1, dyn.config.embed_dim // 4)
        # two new frames at once (causal among themselves) against a 2-frame cache
        two_cache = dyn.prefill(lat[:, :2], act[:, :1], dyn.new_cache(B, 2), pe[:2])
        two, _ = dyn.extend(lat[:, -2:], act[:, -2:], two_cache.k, two_cache.v, two_cache.valid, pe[-2:])
        torch.testing.assert_close(two, full[:, -2:], atol=1e-5, rtol=1e-5)
        frames = dec(lat)
        dpe = temporal_pe(T, model.tokenizer.config.embed_dim)
        dcache = dec.prefill(lat[:, :-1], dec.new_cache(B, 3), dpe[:-1])
        new, _ = dec.extend(lat[:, -1:], dcache.k, dcache.v, dcache.valid, dpe[-1:])
        torch.testing.assert_close(new[:, 0], frames[:, -1], atol=1e-5, rtol=1e-5)


def test_ring_cache_is_attention_over_the_last_frames_in_any_order():
    model = random_world_model(**SMALL)
    dyn = model.dynamics
    B, P, C = 2, dyn.config.num_patches, 3
    lat = model.tokenizer.quantizer.latents(torch.randint(0, dyn.config.codebook_size, (B, 6, P)))
    act = torch.randn(B, 6, dyn.config.conditioning_dim)
    pe = temporal_pe(C + 1, dyn.config.embed_dim)
    with torch.no_grad():
        kvs = [dyn.extend(lat[:, i:i + 1], act[:, i:i + 1], None, None, None, pe[:1], head=False)[1] for i in range(5)]
        ring = dyn.new_cache(B, C)
        for kv in kvs:
            ring.write(*kv)                                                        # 5 frames into 3 slots
        assert ring.frames == C and bool(ring.valid.all())
        in_order = [torch.cat([kvs[i][j] for i in (2, 3, 4)], 4) for j in (0, 1)]
        got, _ = dyn.extend(lat[:, 5:], act[:, 5:], ring.k, ring.v, ring.valid, pe[C:])
        want, _ = dyn.extend(lat[:, 5:], act[:, 5:], in_order[0], in_order[1], None, pe[C:])
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        half = dyn.new_cache(B, C)
        half.write(*kvs[0])                                                        # 1 of 3 slots valid
        got, _ = dyn.extend(lat[:, 5:], act[:, 5:], half.k, half.v, half.valid, pe[1:2])
        want, _ = dyn.extend(lat[:, 5:], act[:, 5:], kvs[0][0], kvs[0][1], None, pe[1:2])
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_choose_tokens_ranks_like_a_stable_sort():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, 7, generator=g)
    logits[0, 10:20] = logits[0, 10]                   # exact ties in confidence: position order decides
    masked = torch.rand(3, 40, generator=g) < 0.7
    for target in (0, 5, 17, 40):
        _, chosen = choose_tokens(logits, masked, target, min_per_step=2)
        conf = torch.softmax(logits, -1).max(-1).values.masked_fill(~masked, float("-inf"))
        order = torch.sort(conf, dim=1, descending=True, stable=True).indices
        for b in range(3):
            still = int(masked[b].sum())
            n = min(max(target - (40 - still), 0), still)
            n = max(n, 2)
            want = torch.zeros(40, dtype=torch.bool)
            want[order[b, :n]] = True
            assert torch.equal(chosen[b], want & masked[b]), (target, b)


@pytest.mark.parametrize("temporal_tokenizer", [True, False])
def test_fast_mode_equals_compat_until_its_approximations_apply(temporal_tokenizer):
    model = random_world_model(**SMALL, temporal_tokenizer=temporal_tokenizer)
    C = SMALL["context_length"]
    context, ids = frames_for(model, 2, 1), ids_for(model, 2, C)
    compat = World(model, device="cpu", steps=4).reset(context)
    window = World(model, device="cpu", mode="fast", steps=4, min_confidence=0).reset(context)   # compat's rule
    streamed = World(model, device="cpu", mode="fast", steps=4, stream=True, min_confidence=0).reset(context)
    assert streamed.stream and not window.stream       # the window is fast mode's default
    first = compat.step(ids[:, 0])
    torch.testing.assert_close(window.step(ids[:, 0]), first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(streamed.step(ids[:, 0]), first, atol=1e-5, rtol=1e-5)
    if not temporal_tokenizer:
        # Frame-wise tokens: the streaming caches are exact while the window fills (no frame has
        # changed position yet); a space-time tokenizer's window is re-encoded, so they part there.
        for i in range(1, C):
            torch.testing.assert_close(streamed.step(ids[:, i]), window.step(ids[:, i]), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("temporal_tokenizer", [True, False])
def test_fast_window_equals_its_plain_reference_past_the_training_window(temporal_tokenizer):
    """Fast mode (window context) is reference_token_rollout, and compat reference_rollout, token for token
    at temperature 0 for three context lengths of frames: no position drifts past the training window."""
    model = random_world_model(**SMALL, temporal_tokenizer=temporal_tokenizer)
    C = SMALL["context_length"]
    context, ids = frames_for(model, 2, C), ids_for(model, 2, 3 * C)
    for steps, confidence in ((10, 0.0), (2, None), (2, 0.02)):     # None: fast mode's default rule
        fast = World(model, device="cpu", mode="fast", steps=steps, min_confidence=confidence).reset(context)
        assert torch.equal(fast.rollout(ids), reference_token_rollout(model, context, ids, steps, min_confidence=confidence))
    compat = World(model, device="cpu", mode="compat", steps=10).reset(context).rollout(ids)
    assert torch.equal(compat, reference_rollout(model, context, ids, steps=10))


def test_frame_wise_tokenizer_tokens_do_not_depend_on_the_window():
    model = random_world_model(**SMALL, temporal_tokenizer=False)
    frames = frames_for(model, 1, 6)
    alone = model.tokenizer.encode(frames[:, 3:4])[:, 0]
    for start in (1, 2, 3):                           # frame 3 at each place of a 3-frame window
        assert torch.equal(model.tokenizer.encode(frames[:, start:start + 3])[:, 3 - start], alone)
    spacetime = random_world_model(**SMALL)          # tinyworlds' tokenizer: the place in the window matters
    late = spacetime.tokenizer.encoder(frames[:, :4])[:, 3]
    first = spacetime.tokenizer.encoder(frames[:, 3:4])[:, 0]
    assert not torch.allclose(late, first)


@pytest.mark.parametrize("mode", ["compat", "fast"])
def test_seeded_sampled_rollout_is_reproducible(mode):
    model = random_world_model(**SMALL)
    context, ids = frames_for(model, 2, 3), ids_for(model, 2, 3)
    world = World(model, device="cpu", mode=mode, steps=4, temperature=1.0, seed=7)
    a = world.reset(context).rollout(ids)
    b = world.reset(context).rollout(ids)
    assert torch.equal(a, b)
    c = World(model, device="cpu", mode=mode, steps=4, temperature=1.0, seed=8).reset(context).rollout(ids)
    assert not torch.equal(a, c)                      # the seed matters: sampling is really on


@pytest.mark.parametrize("mode", ["compat", "fast"])
def test_batch_items_do_not_leak_into_each_other(mode):
    model = random_world_model(**SMALL)
    context, ids = frames_for(model, 3, 3), ids_for(model, 3, 3)
    batch = World(model, device="cpu", mode=mode, steps=4).reset(context).rollout(ids)
    for i in range(3):
        alone = World(model, device="cpu", mode=mode, steps=4).reset(context[i:i + 1]).rollout(ids[i:i + 1])
        torch.testing.assert_close(alone[0], batch[i], atol=1e-4, rtol=1e-4)


def test_actions_as_latent_codes_and_uint8_frames():
    model = random_world_model(**SMALL)
    context, ids = frames_for(model, 2, 3), ids_for(model, 2, 2)
    u8 = ((context + 1) * 127.5).round().to(torch.uint8).permute(0, 1, 3, 4, 2)  # [B, T, H, W, 3]
    world = World(model, device="cpu", steps=3)
    by_id = world.reset(u8).rollout(ids)
    by_code = world.reset(u8).rollout(model.lam.latents(ids))
    assert torch.equal(by_id, by_code)
    out = world.reset(u8).step(ids[:, 0], as_uint8=True)
    assert out.dtype == torch.uint8 and out.shape == (2, 32, 32, 3)


def test_bad_input_gives_one_line_errors():
    model = random_world_model(**SMALL)
    world = World(model, device="cpu", steps=2)
    with pytest.raises(WmfastError, match="reset"):
        world.step(torch.tensor([0, 1]))
    world.reset(frames_for(model, 2, 2))
    cases = [
        (torch.tensor([0, 8]), "must be in \\[0, 8\\)"),                     # out of range
        (torch.tensor([-1, 0]), "must be in \\[0, 8\\)"),
        (torch.tensor([0, 1, 2]), "batch 3"),                               # wrong batch
        (torch.tensor([[0, 1]]), "action ids must be \\[B=2\\]"),           # wrong shape
        (torch.zeros(2, 5), "must end in \\[3\\]"),                         # latent codes of the wrong width
        (torch.full((2, 3), float("nan")), "NaN"),
        ("left", "action ids or latent codes"),
    ]
    for actions, message in cases:
        with pytest.raises(WmfastError, match=message):
            world.step(actions)
    bad_frames = [
        (torch.rand(2, 2, 3, 16, 16), "must end in \\[3, 32, 32\\]"),       # wrong frame size
        (torch.rand(2, 3, 32, 32) * 2 - 1, "5 dims"),                       # no time axis
        (torch.full((1, 2, 3, 32, 32), 3.0), "\\[-1, 1\\]"),                 # not normalised
        (torch.zeros(1, 2, 3, 32, 32, dtype=torch.uint8), "must end in \\[32, 32, 3\\]"),   # uint8 channels-first
        (torch.zeros(1, 0, 3, 32, 32), "at least 1 frame"),
    ]
    for frames, message in bad_frames:
        with pytest.raises(WmfastError, match=message):
            world.reset(frames)
    with pytest.raises(WmfastError, match="mode"):
        World(model, mode="turbo")
    with pytest.raises(WmfastError, match="steps"):
        World(model, steps=0)
    with pytest.raises(WmfastError, match="backend"):
        World(model, backend="tpu")
    with pytest.raises(WmfastError, match="stream=True"):
        World(model, mode="compat", stream=True)


@pytest.mark.parametrize("mode", ["compat"])
def test_compiled_step_is_one_graph_and_gives_the_same_frames(mode):
    # fullgraph=True fails on any graph break (a host sync or Python branch on data would be one);
    # aot_eager traces like inductor without minutes of C++ compilation on 2 cores.
    torch._dynamo.reset()
    model = random_world_model(**SHAPES[2][0])
    context, ids = frames_for(model, 2, 2), ids_for(model, 2, 3)
    want = World(model, device="cpu", mode=mode, steps=3).reset(context).rollout(ids)
    world = World(model, device="cpu", mode=mode, backend="compile", steps=3,
                  compile_options={"backend": "aot_eager", "fullgraph": True})
    torch.testing.assert_close(world.reset(context).rollout(ids), want, atol=1e-5, rtol=1e-5)


def test_min_confidence_leaves_unsure_tokens_for_later_steps():
    # 4 positions: two sure (p ~ 0.99), two unsure (p ~ 0.5); the schedule would unmask all four at once
    sure, unsure = torch.tensor([8.0, 0.0, 0.0]), torch.tensor([0.1, 0.0, -5.0])
    logits = torch.stack([sure, unsure, sure * 0.9, unsure * 0.5])[None]              # [1, 4, 3]
    masked = torch.ones(1, 4, dtype=torch.bool)
    _, plain = choose_tokens(logits, masked, 4, 1)
    _, gated = choose_tokens(logits, masked, 4, 1, min_confidence=0.9)
    assert plain.tolist() == [[True] * 4] and gated.tolist() == [[True, False, True, False]]
    _, first = choose_tokens(logits[:, [1, 3]], masked[:, :2], 2, 1, min_confidence=0.9)
    assert first.tolist() == [[True, False]]           # none sure enough: the surest one alone
    model = random_world_model(**SMALL)
    with pytest.raises(WmfastError, match="min_confidence"):
        World(model, mode="compat", min_confidence=0.5)
    with pytest.raises(WmfastError, match="min_confidence"):
        World(model, mode="fast", min_confidence=1.5)
    assert World(model, mode="fast").min_confidence > 0 and World(model, mode="compat").min_confidence == 0


def test_unsure_model_takes_at_most_the_extra_steps_and_decides_every_token():
    # a random model is sure of nothing: without the bound, fast mode would take one step per token
    model = random_world_model(**SMALL)
    context, ids = frames_for(model, 2, 3), ids_for(model, 2, 2)
    world = World(model, device="cpu", mode="fast", steps=1, min_confidence=0.99).reset(context)
    steps, step = [], world.backend.maskgit_step

    def counted(x, masked, *args, **kw):
        steps.append(int(masked.sum()))
        return step(x, masked, *args, **kw)

    world.backend.maskgit_step = counted
    world.step(ids[:, 0])
    assert len(steps) == 1 + MAX_EXTRA_STEPS and steps[-1] > 0     # the last step still had tokens to decide
    fresh = World(model, device="cpu", mode="fast", steps=1, min_confidence=0.99).reset(context)
    assert torch.equal(fresh.rollout(ids), reference_token_rollout(model, context, ids, 1, min_confidence=0.99))
