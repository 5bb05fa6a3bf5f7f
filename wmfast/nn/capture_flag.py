"""The switch the model code checks: `if _capture.active: _capture.record(...)` (wmfast.viz opens
and closes it; it lives here, below the models, so that nn and models never import the viz app).

This module is tiny and imports nothing heavy, so the models can import it at load time. While no
capture_attention() context is open, `active` is False and an attention call does one attribute
check and nothing else: no hooks, no wrappers, no extra tensors.
"""
active = False
recorder = None   # the open AttentionRecorder (wmfast.viz.capture) while active


def record(module, q, k, **layout):
    """Called by an attention module for the call that just ran: q [.., Q, Dh], k [.., K, Dh];
    the recorder recomputes the probabilities (see AttentionRecorder.record)."""
    if recorder is not None:
        recorder.record(module, q, k, **layout)
