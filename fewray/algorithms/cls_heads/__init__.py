"""mmpretrain's classification heads (multi-label, ArcFace): registered in :data:`fewray.algorithms.HEADS`."""
