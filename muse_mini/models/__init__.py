"""The networks of Muse: tokenizers (§2.2, §2.5), transformers (§2.3, §2.4), text encoders (§2.1).

Nothing here trains or samples: the modules build, run and count models.
"""
