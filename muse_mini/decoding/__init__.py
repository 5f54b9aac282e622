"""Decoding (Muse §2.6-2.8, §3.3): masking schedules, guidance, the parallel sampler, editing."""
