"""`wmfast policy train|imagine|eval|dream`: thin wrappers over wmfast.policy."""
from wmfast.cli.common import deprecated_alias, device_name, nonneg_int, number, positive_float, positive_int, \
    positive_int_list
from wmfast.errors import WmfastError


def add_commands(sub):
    pol = sub.add_parser("policy", help="image -> action-chunk policies (BC, chunk MLP, ACT): train, imagine, eval, dream")
    cmds = pol.add_subparsers(dest="policy_command", required=True)
    p = cmds.add_parser("train", help="train on expert data + DAgger rounds (the ACT recipe by default)")
    p.add_argument("--kind", choices=["bc", "chunk", "act"], default="act", help="policy architecture")
    p.add_argument("--data", default="game:reach", help="game:reach (expert + DAgger), a reach .h5, game:pong, "
                                                        "game:maze or any dataset with action ids")
    p.add_argument("--run", required=True, help="run directory to write")
    p.add_argument("--samples", type=positive_int, default=10000, help="training samples in all (expert + DAgger)")
    p.add_argument("--epochs", type=nonneg_int, default=0, help="epochs in all (half on expert data, rest over "
                                                                "rounds); 0: auto = 20, 120 with --teacher")
    p.add_argument("--dagger-rounds", type=nonneg_int, default=2, help="DAgger rounds after the expert data")
    p.add_argument("--dagger-horizon", type=positive_int, default=2,
                   help="actions per inference while the learner drives")
    p.add_argument("--batch-size", type=positive_int, default=64, help="samples per optimizer step")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--chunk", type=positive_int, default=8, help="actions per chunk (bc: 1)")
    p.add_argument("--size", type=nonneg_int, default=0, help="frame size (default 128 for reach, 64 for discrete games)")
    p.add_argument("--teacher", default="", help="discrete embedded game: train on a scripted teacher's episodes "
                                                 "+ DAgger instead of the dataset (game:pong: tracker = aiming, "
                                                 "or centre)")
    p.add_argument("--episode-steps", type=positive_int, default=200, help="steps per teacher / DAgger episode")
    p.add_argument("--shift", type=number(int, -1), default=-1, help="random translation augmentation, max pixels "
                   "per axis (-1: auto = whole frame for reach, off for discrete; 0: off)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--threads", type=nonneg_int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", type=device_name, default="auto", help="auto (cuda when available), cpu or cuda")
    p.set_defaults(func=_train)

    p = cmds.add_parser("imagine", help="actor-critic trained inside a world model's dream (or, --env game, "
                                        "in the real embedded game: the upper bound)")
    p.add_argument("--world", required=True, help="a world-model run with action_map.json and reward/ "
                                                  "(`wmfast train reward`)")
    p.add_argument("--run", required=True, help="policy run directory to write (or resume)")
    p.add_argument("--kind", choices=["bc", "chunk", "act"], default="bc",
                   help="the actor: bc (one action per frame), chunk or act (--chunk actions per frame, open loop)")
    p.add_argument("--chunk", type=positive_int, default=4, help="chunk / act: actions per decision")
    p.add_argument("--env", choices=["dream", "game"], default="dream", help="where the agent acts")
    p.add_argument("--iterations", type=positive_int, default=200, help="optimizer steps, one batch of rollouts each")
    p.add_argument("--batch-size", type=positive_int, default=64, help="rollouts per step (World batch)")
    p.add_argument("--horizon", type=positive_int, default=16, help="steps per imagined rollout")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--entropy", type=number(float, 0), default=3e-3, help="entropy bonus weight")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from RUN/train_state.pt")
    p.add_argument("--threads", type=nonneg_int, default=0, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=_imagine)

    p = cmds.add_parser("eval", help="play held-out episodes per actions-per-inference horizon; table, plot, GIFs")
    p.add_argument("--run", required=True, help="a policy run directory")
    p.add_argument("--episodes", type=positive_int, default=100)
    p.add_argument("--horizon", type=positive_int_list, default="8,4,2", help="actions per inference, comma-separated")
    p.add_argument("--ensemble", action="store_true", help="also run ACT's temporal ensembling (replan every step)")
    p.add_argument("--seed", type=nonneg_int, default=1000, help="picks the held-out episodes")
    p.add_argument("--episode-steps", type=positive_int, default=1000,
                   help="discrete games: steps per episode (points are rare: score over many steps)")
    deprecated_alias(p, "--steps", "--episode-steps")
    p.add_argument("--json", default=None, help="also write the report here")
    p.add_argument("--out", default=None, help="folder for eval.json, eval.png and GIFs (default RUN/eval)")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=RUN",
                   help="discrete games: also play another policy run on the same seeds, reported as NAME "
                        "(repeatable; e.g. bc-on-labels=RUN, real-actor-critic=RUN)")
    p.add_argument("--sample", action="store_true", help="discrete policies draw actions from their probabilities "
                                                         "(seeded) instead of the most likely (actor-critic policies)")
    p.set_defaults(func=_eval)

    p = cmds.add_parser("dream", help="run a policy on a world model's frames, beside the real game (GIF + PSNR)")
    p.add_argument("--policy", required=True, help="a policy run directory (trained on an embedded game)")
    p.add_argument("--world", required=True, help="a world-model run directory with action_map.json")
    p.add_argument("--frames", type=positive_int, default=32, help="dreamed frames (policy steps)")
    deprecated_alias(p, "--steps", "--frames")
    p.add_argument("--horizon", type=positive_int, default=2, help="actions per inference")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--mode", choices=["compat", "fast"], default="fast", help="World mode of the dream rollout")
    p.add_argument("--maskgit-steps", type=positive_int, default=4, help="MaskGIT steps per dreamed frame")
    p.add_argument("--out", default=None, help="GIF path (default POLICY/dream.gif); a JSON lands beside it")
    p.add_argument("--sample", action="store_true", help="draw actions from the policy's probabilities (seeded)")
    p.set_defaults(func=_dream)


def _train(a):
    from wmfast.policy.train import PolicyTrainConfig, train_policy

    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    cfg = PolicyTrainConfig(kind=a.kind, data=a.data, samples=a.samples, epochs=a.epochs, dagger_rounds=a.dagger_rounds,
                            dagger_horizon=a.dagger_horizon, batch_size=a.batch_size, lr=a.lr, chunk=a.chunk,
                            frame_size=a.size, seed=a.seed, device=a.device, teacher=a.teacher,
                            episode_steps=a.episode_steps, shift=a.shift)
    s = train_policy(a.run, cfg)
    print(f"{a.run}: {s['kind']} policy, {s['params']:,} params, {s['samples']} samples, {s['steps']} steps, "
          f"{s['seconds']:.0f} s, val_loss {s['val_loss']:.4g}")


def _imagine(a):
    from wmfast.policy.imagine import ImagineConfig, imagine

    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    cfg = ImagineConfig(kind=a.kind, chunk=a.chunk, env=a.env, iterations=a.iterations, batch_size=a.batch_size,
                        horizon=a.horizon, lr=a.lr, entropy=a.entropy, seed=a.seed)
    s = imagine(a.run, a.world, cfg, resume=a.resume)
    print(f"{a.run}: {s['kind']} actor-critic, {s['params']:,} params, {s['iterations']} iterations, "
          f"{s['env_steps']:,} {'imagined' if s['env'] == 'dream' else 'real'} steps, {s['seconds']:.0f} s; "
          f"the action map used {s['action_map_labels']} labelled transitions")


def _eval(a):
    from wmfast.policy.evaluate import evaluate_policy, format_table

    baselines = {}
    for item in a.baseline:
        name, sep, run = item.partition("=")
        if not sep or not name or not run:
            raise WmfastError(f"--baseline must be NAME=RUN, got {item!r}")
        baselines[name] = run
    report = evaluate_policy(a.run, a.episodes, ",".join(map(str, a.horizon)), a.seed, a.json, a.ensemble, a.out,
                             steps=a.episode_steps, baselines=baselines, sample=a.sample)
    print(format_table(report))


def _dream(a):
    from wmfast.policy.dream import dream

    r = dream(a.policy, a.world, steps=a.frames, horizon=a.horizon, seed=a.seed, out=a.out, mode=a.mode,
              maskgit_steps=a.maskgit_steps, sample=a.sample)
    print(f"{r['gif']}: dreamed {len(r['psnr'])} steps, mean PSNR vs the real game {r['mean_psnr']:.2f} dB, "
          f"action agreement {r['action_agreement']:.2f}")
    per = ", ".join(f"{name} {row['differs']:.0%} of {row['steps']}" for name, row in r["per_action"].items())
    print(f"one step from the real frames, the World makes something else than the game for: {per}")
    if r["rewards"] is not None:
        w = r["rewards"]
        print(f"rewards: dreamed return {w['dreamed_return']:g} vs real {w['real_return']:g}; "
              f"{w['dreamed_not_real']} dreamed reward events the real game did not pay, "
              f"{w['real_not_dreamed']} real ones the dream missed")
