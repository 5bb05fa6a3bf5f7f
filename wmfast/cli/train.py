"""`wmfast train tokenizer|actions|dynamics` (wmfast.train.train_stage), on one process or, with
--nproc N, relaunched on N through torch.distributed's launcher; `wmfast train action-map|reward`,
the short fits on a trained run."""
import os

from wmfast.cli.common import SetOption, device_name, nonneg_int, number, parse_overrides, positive_float, \
    positive_int
from wmfast.errors import WmfastError

STAGE_STEPS = 2000   # --steps default of the world-model stages

EXAMPLES = ("examples:\n  wmfast train tokenizer --run runs/pong --data game:pong --preset tiny --steps 500\n"
            "  wmfast train actions --run runs/pong          # uses the tokenizer's data\n"
            "  wmfast train dynamics --run runs/pong --set num_blocks=4 --set embed_dim=128\n"
            "  wmfast train dynamics --run runs/pong --set pause_clip_prob=0.1   # a training option\n"
            "  wmfast train tokenizer --run runs/pong --resume   # after Ctrl-C\n"
            "  wmfast train action-map --run runs/pong           # then: wmfast serve --run runs/pong\n"
            "  wmfast train reward --run runs/pong               # reward / episode-end head -> RUN/reward/")


def add_commands(sub):
    p = sub.add_parser("train", help="train one stage: tokenizer, then actions, then dynamics, then action-map "
                                     "(and reward)",
                       epilog=EXAMPLES)
    p.add_argument("stage", choices=["tokenizer", "actions", "dynamics", "action-map", "reward"],
                   help="which stage to train (in this order); action-map fits the game action -> latent code map "
                        "that World(actions=\"game\") and `wmfast serve` play (needs data with game actions); "
                        "reward fits a head that reads the game's rewards (and episode ends) off two frames "
                        "(needs data with rewards) and scores it on the held-out episodes")
    p.add_argument("--run", "--run-dir", dest="run", required=True,
                   help="run directory (stages live in its subfolders); write --run-dir after `torchrun ... -m wmfast`")
    p.add_argument("--data", default=None, help="dataset: .h5 file, video/PNG folder, game:NAME[:EPISODES] or "
                   "atari:GAME (default: what the run's earlier stages were trained on, else game:maze)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help=f"optimizer steps for this stage (default: {STAGE_STEPS}); action-map: the steps of the map's fit "
                        "(default: wmfast.models.action_map.FRAME_MAP_STEPS); reward: the head's "
                        "(default: wmfast.train.reward.REWARD_STEPS)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="clips per optimizer step")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate (AdamW, warmup then cosine)")
    p.add_argument("--warmup-steps", type=nonneg_int, default=100, help="linear learning-rate warmup steps")
    p.add_argument("--clip-len", type=number(int, 2), default=4,
                   help="frames per training clip (the dynamics' context length)")
    p.add_argument("--stride", type=positive_int, default=1, help="frames between consecutive clip frames")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "tinyworlds"],
                   help="model size (tiny trains in seconds; small is the demo's)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed for weights, clip sampling and the split")
    p.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--log-every", type=positive_int, default=25, help="steps between metrics.jsonl rows")
    p.add_argument("--save-every", type=positive_int, default=250, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint; "
                   "preset, schedule, --set and data must match the saved run")
    p.add_argument("--force", action="store_true", help="with --resume: continue even though --steps, --lr, "
                   "--data, ... differ from the saved run (the new values win)")
    p.add_argument("--set", action=SetOption, metavar="KEY=VALUE", help="one model config field, e.g. --set "
                   "embed_dim=64, or a training config field (dynamics: future_mask_prob, pause_clip_prob; "
                   "weight_decay, grad_clip, val_fraction); repeat for several (--set a=1 --set b=2)")
    p.add_argument("--nproc", type=positive_int, default=1, help="train on N local processes (DDP through torchrun's "
                                                        "launcher); --batch-size stays the global batch")
    p.set_defaults(func=_train, parser=p)


def _train(a):
    from wmfast.train import train_stage

    if a.stage == "action-map":
        return _train_action_map(a)
    if a.stage == "reward":
        return _train_reward(a)
    a.steps = STAGE_STEPS if a.steps is None else a.steps
    if a.nproc != 1:
        return _relaunch(a)
    cfg, overrides = _train_options(a)
    metrics = train_stage(a.stage, a.run, a.data, cfg, model=overrides, resume=a.resume, force=a.force)
    if os.environ.get("RANK", "0") == "0":   # one summary line, from rank 0, under torchrun
        print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))


def _refuse_world_model_options(a):
    """The short fits (action-map, reward) take --run, --data, --steps and --seed only."""
    given = [name for name, off in (("--resume", not a.resume), ("--force", not a.force), ("--set", not a.set),
                                    ("--nproc", a.nproc == 1)) if not off]
    if given:
        raise WmfastError(f"train {a.stage}: {given[0]} does not apply (it takes --run, --data, --steps, --seed)")


def _train_action_map(a):
    from wmfast.models.action_map import FRAME_MAP_STEPS
    from wmfast.train.action_map import train_action_map

    _refuse_world_model_options(a)
    info = train_action_map(a.run, a.data, steps=FRAME_MAP_STEPS if a.steps is None else a.steps, seed=a.seed)
    print(f"action map: {info['action_map_file']} (game action -> code {info['game_to_latent']}; "
          f"{info['fit_transitions']} transitions of {info['fit_episodes']} training episodes, {info['fit_steps']} steps)")


def _train_reward(a):
    from wmfast.config import save_json
    from wmfast.eval.reward import evaluate_reward
    from wmfast.train.reward import REWARD_STEPS, train_reward

    _refuse_world_model_options(a)
    report = train_reward(a.run, a.data, steps=REWARD_STEPS if a.steps is None else a.steps, seed=a.seed)
    report["held_out"] = held = evaluate_reward(a.run, a.data)
    save_json({k: v for k, v in report.items() if k != "folder"}, os.path.join(report["folder"], "report.json"))
    events = ", ".join(f"reward {v}: precision {fmt(e['precision'])} recall {fmt(e['recall'])} of {e['events']}"
                       for v, e in held["events"].items())
    print(f"reward head: {report['folder']} ({report['fit_transitions']} transitions of "
          f"{report['fit_episodes']} training episodes); held-out {held['transitions']} transitions: {events}; "
          f"ECE {fmt(held['ece'])}")


def fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _relaunch(a):
    """`wmfast train ... --nproc N`: the same command on N local processes."""
    from wmfast.cli.common import command_line
    from wmfast.train.distributed import env_world_size, launch

    if env_world_size() > 1:
        raise WmfastError("--nproc starts the processes itself; under torchrun leave it out")
    if a.batch_size % a.nproc:   # fail before starting anything
        raise WmfastError(f"--batch-size {a.batch_size} is the global batch and must split evenly over "
                          f"{a.nproc} processes (use a multiple of {a.nproc})")
    launch(["-m", "wmfast", "train"] + command_line(a.parser, a, skip=("nproc", "parser", "func")), a.nproc)
    return 0


TRAIN_OPTIONS = ("steps", "batch_size", "lr", "warmup_steps", "clip_len", "stride", "preset", "seed", "device",
                 "compile", "log_every", "save_every")


def _train_options(a):
    """`wmfast train` options -> (training config, model overrides), all checked before any work.
    --set KEY=VALUE sets a field of the stage's model config, or of its training config when KEY is
    one (the dynamics' future_mask_prob, pause_clip_prob; weight_decay, ...). On --resume, options
    not written on the command line take the saved run's values, so only what the user changed is
    compared with the run."""
    import dataclasses

    from wmfast.checkpoint import STAGES
    from wmfast.config import check_overrides
    from wmfast.train.trainer import STAGE_TRAIN_CONFIGS, TrainConfig, saved_train_config

    if a.force and not a.resume:
        raise WmfastError("--force only applies with --resume")
    if os.path.exists(a.run) and not os.path.isdir(a.run):
        raise WmfastError(f"--run {a.run} is a file; give a run directory")
    train_cls = STAGE_TRAIN_CONFIGS.get(a.stage, TrainConfig)
    model_set, train_set = split_set(a.stage, parse_overrides(a.set), STAGES[a.stage][1], train_cls)
    overrides = check_overrides(STAGES[a.stage][1], model_set, stage=a.stage)
    train_set = check_overrides(train_cls, train_set, stage=f"{a.stage} training")
    given = getattr(a, "_given", set(TRAIN_OPTIONS))
    saved = saved_train_config(a.run, a.stage) if a.resume else None
    values = {k: getattr(a, k) for k in TRAIN_OPTIONS if saved is None or k in given}
    values.update(train_set)
    return (dataclasses.replace(saved, **values) if saved else train_cls(**values)), overrides


def split_set(stage: str, pairs: dict, model_cls, train_cls) -> tuple:
    """--set pairs -> (model config fields, training config fields). A key of the training config
    goes there, unless `wmfast train` has its own option for it (--steps, ...); a dynamics training
    key given for another stage is refused by name."""
    import dataclasses

    from wmfast.train.trainer import DYNAMICS_TRAINING_FIELDS

    model_fields = set(model_cls.settable())
    train_fields = {f.name for f in dataclasses.fields(train_cls)} - model_fields - {"progress"}
    model, train = {}, {}
    for key, value in pairs.items():
        if key in TRAIN_OPTIONS:
            raise WmfastError(f"--set {key}=...: use --{key.replace('_', '-')} (an option of `wmfast train`)")
        if key in DYNAMICS_TRAINING_FIELDS and key not in train_fields:
            raise WmfastError(f"--set {key}=...: {key} is how the dynamics' training clips are drawn; "
                              f"it applies to `wmfast train dynamics` only, not {stage}")
        (train if key in train_fields else model)[key] = value
    return model, train
