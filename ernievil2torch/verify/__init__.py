"""Verification: synthetic checkpoints and vocab, the independent Paddle reference, parity measurement and
the logit check. Only :mod:`.paddle_reference` (and :mod:`.logit_check`, when run) needs Paddle."""
