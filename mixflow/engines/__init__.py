"""Inference engines: each turns (model, data) into plain dicts of arrays with dims."""
