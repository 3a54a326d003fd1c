"""Published mean IU (%) to set our runs against, with where each number comes from.

These are the only numbers in fcnlib that were not computed by it; each names its source.
"""

from __future__ import annotations

#: PASCAL VOC 2011 seg11valid, by model: the CVPR 2015 paper (Table 2) and the reference
#: implementation (PAMI 2016, fcn.berkeleyvision.org), both from ImageNet-trained VGG16.
VOC_MEAN_IU: dict[str, dict[str, float]] = {
    "fcn32s": {"CVPR 2015": 59.4, "reference": 63.6},
    "fcn16s": {"CVPR 2015": 62.4, "reference": 65.0},
    "fcn8s": {"CVPR 2015": 62.7, "reference": 65.5},
    "fcn8s-atonce": {"reference": 65.4},
}

#: CamVid test (SegNet's 11-class split, 233 images at 360x480), as tabulated by Jégou et al.,
#: "The One Hundred Layers Tiramisu" (CVPR Workshops 2017), Table 2.
CAMVID_MEAN_IU: dict[str, float] = {
    "SegNet (ImageNet VGG16)": 46.4,
    "ENet (from scratch)": 51.3,
    "FCN-8s (ImageNet VGG16)": 57.0,
    "FC-DenseNet103 (from scratch)": 66.9,
}


def published(dataset: str, model: str | None = None) -> dict[str, float]:
    """Published mean IU (%) by source: for ``model`` on "voc", or every anchor on "camvid".

    An unknown dataset or model raises ``ValueError`` naming the known ones.
    """
    if dataset == "camvid":
        return dict(CAMVID_MEAN_IU)
    if dataset != "voc":
        raise ValueError(f"dataset must be camvid or voc; got {dataset!r}")
    if model not in VOC_MEAN_IU:
        raise ValueError(f"model must be one of {', '.join(VOC_MEAN_IU)}; got {model!r}")
    return dict(VOC_MEAN_IU[model])
