"""Solutions to notebook 00's exercises (pooling and comparing text embeddings, §2.1)."""

import numpy as np


def masked_mean_pool(emb_BxTxD, mask_BxT):
    weight_BxTx1 = np.asarray(mask_BxT, np.float32)[..., None]
    total_BxD = (np.asarray(emb_BxTxD) * weight_BxTx1).sum(axis=1)
    return total_BxD / weight_BxTx1.sum(axis=1)  # the number of real tokens in each caption


def cosine_similarity(a_NxD, b_MxD):
    a_NxD = a_NxD / np.linalg.norm(a_NxD, axis=1, keepdims=True)
    b_MxD = b_MxD / np.linalg.norm(b_MxD, axis=1, keepdims=True)
    return a_NxD @ b_MxD.T
