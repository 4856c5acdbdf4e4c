"""Training recipes (issue 4): `python -m granite_asr.train STAGE ...`."""
