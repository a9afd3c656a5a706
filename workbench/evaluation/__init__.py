"""Evaluation: benchmark readers, the official and standard scorers, a resumable sharded runner."""
