"""Published mean IU (%) to set our runs against, with where each number comes from.

These are the only numbers in fcnlib that were not computed by it; each names its source.
"""

from __future__ import annotations

#: The PAMI 2016 paper's nets, retrained with its reference implementation
#: (fcn.berkeleyvision.org), which publishes the same numbers.
PAMI = "PAMI 2016 / reference"

#: PASCAL VOC 2011 seg11valid, by model: the CVPR 2015 paper (Table 2) and the PAMI 2016 paper
#: with its reference implementation, all fine-tuned from ImageNet-trained VGG16.
VOC_MEAN_IU: dict[str, dict[str, float]] = {
    "fcn32s": {"CVPR 2015": 59.4, PAMI: 63.6},
    "fcn16s": {"CVPR 2015": 62.4, PAMI: 65.0},
    "fcn8s": {"CVPR 2015": 62.7, PAMI: 65.5},
    "fcn8s-atonce": {PAMI: 65.4},
}

#: FCN-8s on the PASCAL VOC 2012 test set (scored by the evaluation server).
VOC2012_TEST_MEAN_IU: dict[str, float] = {"CVPR 2015": 62.2, PAMI: 67.2}

#: CVPR 2015, Table 2: FCN-32s-fixed, with ImageNet features kept and only its classifier
#: learned (against 59.4 with every layer fine-tuned): the paper's evidence for fine-tuning.
FCN32S_FIXED_MEAN_IU = 45.4

#: CVPR 2015, Section 4.3 (Fine-tuning): days of training on a single GPU, each staged net
#: started from the one before.
TRAINING_DAYS: dict[str, float] = {"fcn32s": 3.0, "fcn16s": 1.0, "fcn8s": 1.0}

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


def format_paper() -> str:
    """The FCN papers' own results on PASCAL VOC as a text table: mean IU (%) on seg11valid and
    on VOC 2012 test, the fixed-features ablation, and the training times."""
    sources = ("CVPR 2015", PAMI)
    lines = [f"{'mean IU (%), ImageNet VGG16':<30}{sources[0]:>11}{sources[1]:>24}"]
    rows = [(f"seg11valid {m}", VOC_MEAN_IU[m]) for m in VOC_MEAN_IU]
    rows.append(("VOC 2012 test fcn8s", VOC2012_TEST_MEAN_IU))
    for name, by_source in rows:
        cells = [f"{by_source[s]:.1f}" if s in by_source else "-" for s in sources]
        lines.append(f"{name:<30}{cells[0]:>11}{cells[1]:>24}")
    tuned = VOC_MEAN_IU["fcn32s"]["CVPR 2015"]
    lines.append(
        f"seg11valid fcn32s, ImageNet features fixed: {FCN32S_FIXED_MEAN_IU:.1f}, "
        f"fine-tuned: {tuned:.1f} (CVPR Table 2)"
    )
    days = ", ".join(f"{m} {d:g}" for m, d in TRAINING_DAYS.items())
    lines.append(f"days of training on one GPU (CVPR): {days}")
    return "\n".join(lines)
