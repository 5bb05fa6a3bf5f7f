"""Experiments: studies and variants kept beside wmfast, not installed with it (run from a clone).

compare.py: controlled LAM / dynamics variant comparisons (the study behind docs/compare-lam and
docs/controllable-dynamics).
pong_capacity_study.py: what pong's long play needs (tokenizer steps, dynamics depth; docs/long-play).
atari_identifiability.py: how identifiable the player's action is under each Atari data policy.
"""
