"""aMUSEd (Patil et al., 2024), the open Muse-style weights, ported to Equinox: CLIP text, U-ViT, VQ."""
