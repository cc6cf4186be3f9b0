r"""The paper's study (Zeng et al. 2019): segmentation vs classification, ablations, cross-manipulation.

  ffjax build-data --manual_dir FFPP --data_dir TFDS            # c23, 256 px (every cell but the
  ffjax build-data ... --image_size 128 / 299                   #   size and mask-source ablations)
  ffjax build-data ... --mask_mode derived
  ffjax study --study paper --workdir /runs/paper --set dataset.data_dir='"TFDS"' [--cells i/n]

Every cell starts from the `default` config (U-Net/Xception, c23, 256 px, 20k steps) and is
scored on the official test split. The classifiers train on the same frames with the frame
label only; a segmentation model's frame score is the mean of its top-k pixel probabilities.
"""

SEGMENTATION = ("unet_xception", "unet_resnet34", "unet_efficientnet_b4", "fpn_resnet34", "deeplabv3plus_resnet34", "unet")
METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")


def get_config():
    cells = [{"name": m, "model": m} for m in SEGMENTATION]
    cells += [{"name": "xception_cls", "config": "xception_cls"},
              {"name": "resnet34_cls", "model": "resnet34"},
              {"name": "efficientnet_b4_cls", "model": "efficientnet_b4"}]
    # One encoder, two heads: the frame decision read from the frame head or from the mask.
    cells += [{"name": "unet_xception_2head", "model": "unet_xception_2head"},
              {"name": "unet_xception_2head_mask_score", "model": "unet_xception_2head", "frame_score_from": "mask"}]
    # Ablations on the paper's model.
    cells += [{"name": "unet_xception_bce_only", "loss.dice_weight": 0.0}]
    cells += [{"name": f"unet_xception_top{k}", "frame_score_topk": k} for k in (0.001, 0.1, 1.0)]  # 1.0: the mean
    cells += [{"name": "unet_xception_max", "frame_score_topk": 1e-9}]  # k is at least one pixel: the max
    cells += [{"name": f"unet_xception_{size}px", "dataset.config_name": f"c23_size{size}"} for size in (128, 299)]
    cells += [{"name": "unet_xception_derived_masks", "dataset.config_name": "c23_masks-derived"}]
    # Cross-manipulation: train on one method's fakes (and every original), test on each.
    cells += [{"name": f"unet_xception_on_{m}", "dataset.train_methods": [m]} for m in METHODS]
    return {"base": "default", "overrides": {}, "test_split": "test", "cells": cells}
