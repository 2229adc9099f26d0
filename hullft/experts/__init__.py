"""Amortised test-time adaptation: one LoRA expert per cluster of the pool, trained once, merged per prompt.

TTMM (Bertolissi, Hübotter et al., COLM 2025; reference implementation `ttmerge`): cluster the training data,
train one LoRA adapter per cluster once, and for each prompt add the experts nearest to it, weighted, to the
base weights before scoring it. Nothing is retrieved or trained at test time.

    settings.py   what determines the experts (`method.experts.*`) and the key they are cached under
    clusters.py   k-means of the pool's embeddings: unit-norm centroids and every row's cluster
    train.py      one expert: the shared engine with LoRA on a seeded sample of its cluster, saved in PEFT's layout
    stage.py      the experts as a stage of the data space: cached, resumable, sharded; their one-time cost
    merging.py    ttmerge's rule (each expert's coefficient) and the merged delta added to the model's weights
    fused_merge.py  the fused CPU merge (fused_merge.cpp), built on first use where it can run, never hanging
"""
