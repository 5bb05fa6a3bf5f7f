"""Evaluators: they read a run and write only where asked."""
