"""Editing images (Muse §3.3), called by the pipeline, built on :mod:`muse_mini.decoding`: ``inputs``
(checked images, masks and prompts), ``methods`` (``EditModels``, ``EditResult``, inpainting, mask-free
editing), ``outpaint`` (past the frame, in windows). Token-level pieces: :mod:`muse_mini.decoding.editing`.
"""
