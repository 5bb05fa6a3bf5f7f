"""`wmfast rollout` (a GIF/MP4 of a world model rolled out from an episode) and `wmfast play` (the
terminal loop), over wmfast.rollout.play."""
from wmfast.cli.common import deprecated_alias, device_name, nonneg_float, nonneg_int, output_file, positive_int


def add_world_options(p, mode: str, maskgit_steps: int):
    """The World options `rollout` and `play` share: engine mode, MaskGIT steps, start, backend, device."""
    p.add_argument("--maskgit-steps", type=positive_int, default=maskgit_steps, help="MaskGIT steps per frame")
    deprecated_alias(p, "--steps", "--maskgit-steps")
    p.add_argument("--mode", choices=["compat", "fast"], default=mode,
                   help="compat: the reference's exact tokens; fast: named approximations, fastest")
    p.add_argument("--data", default=None, help="dataset for the context frames (default: the data the run was "
                                                "trained on, else the embedded default game)")
    p.add_argument("--episode", type=nonneg_int, default=0, help="episode of the dataset to start from")
    p.add_argument("--backend", choices=["eager", "compile", "onnx"], default="eager",
                   help="onnx needs `wmfast export --run RUN` first")
    p.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")


def add_commands(sub):
    p = sub.add_parser("rollout", help="roll a trained world model out from an episode; write a GIF/MP4",
                       epilog="examples:\n  wmfast rollout --run runs/pong --actions 0,1,1,2 --out rollout.gif\n"
                              "  wmfast rollout --run runs/pong --actions infer --mode fast --maskgit-steps 2")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--actions", required=True, help="latent action ids, e.g. 0,1,1,3; game actions by name, e.g. "
                                                    "UP,UP,LEFT (through RUN/action_map.json from `wmfast train action-map`); "
                                                    "or 'infer' (the latent actions of the episode's true frames)")
    p.add_argument("--action-space", choices=["auto", "latent", "game"], default="auto",
                   help="what --actions holds: auto = names are game actions, numbers latent ids; game = game "
                        "action names or ids")
    p.add_argument("--out", default="rollout.gif", type=output_file(".gif", ".mp4"),
                   help="GIF or MP4 (beside the true frames when the data has them)")
    add_world_options(p, mode="compat", maskgit_steps=10)
    p.add_argument("--temperature", type=nonneg_float, default=0.0, help="MaskGIT sampling temperature (0: argmax)")
    p.add_argument("--seed", type=nonneg_int, default=None, help="sampling seed (with --temperature > 0)")
    p.set_defaults(func=_rollout)
    p = sub.add_parser("play", help="play a world model in the terminal: keys 0-9 are actions (latent ids, or the "
                                    "game's actions with --action-space game), q quits",
                       epilog="examples:\n  wmfast play --run runs/pong\n"
                              "  wmfast play --run runs/pong --out live.png --mode fast")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--out", default=None, type=output_file(".png", ".gif", ".mp4"),
                   help="frames written live: .png (latest frame) or .gif/.mp4 (on exit)")
    p.add_argument("--ansi", action="store_true", help="also draw frames in the terminal (default without --out)")
    add_world_options(p, mode="fast", maskgit_steps=4)
    p.add_argument("--action-space", choices=["latent", "game"], default="latent",
                   help="keys are latent action ids, or game action ids through RUN/action_map.json")
    p.set_defaults(func=_play)


def _rollout(a):
    from wmfast.rollout.play import render_rollout

    r = render_rollout(a.run, a.actions, a.out, a.maskgit_steps, a.mode, a.data, a.episode, a.backend, a.device,
                       a.temperature, a.seed, action_space=a.action_space)
    print(f"{r['out']}: {r['frames']} frames ({'true | generated' if r['side_by_side'] else 'generated'}), "
          f"{r['ms_per_frame']:.1f} ms/frame, {r['world']}")


def _play(a):
    from wmfast.rollout.play import play

    play(a.run, a.out, a.ansi or None, a.data, a.episode, a.mode, a.maskgit_steps, a.backend, a.device,
         action_space=a.action_space)
