r"""A few-minute study on the demo's data (`ffjax demo` builds it), to see every table and plot.

  ffjax demo                                   # builds /tmp/ffjax_demo/tfds
  ffjax study --study tiny --workdir /tmp/ffjax_demo/study

The demo's small U-Net against a small ResNet-34 classifier and an FPN, BCE alone against
BCE + Dice, and the U-Net trained on one method at a time. The demo's forgeries are far easier
than FF++'s: the numbers show the machinery, not what the models reach on FF++.
"""

TINY_RESNET = {"width": 0.25, "stage_blocks": [1, 1, 1, 1]}


def get_config():
    cells = [
        {"name": "unet"},
        {"name": "unet_bce_only", "loss.dice_weight": 0.0},
        {"name": "fpn_resnet34_small", "model": "fpn_resnet34",
         "model_kwargs": {"encoder_width": 0.25, "stage_blocks": [1, 1, 1, 1], "pyramid_channels": 32, "segmentation_channels": 32}},
        {"name": "resnet34_cls_small", "model": "resnet34", "model_kwargs": TINY_RESNET},
        {"name": "unet_on_Deepfakes", "dataset.train_methods": ["Deepfakes"]},
        {"name": "unet_on_NeuralTextures", "dataset.train_methods": ["NeuralTextures"]},
    ]
    overrides = {"num_train_steps": 150, "eval_every_steps": 150, "checkpoint_every_steps": 150, "log_every_steps": 50}
    return {"base": "demo", "overrides": overrides, "test_split": "test", "cells": cells}
