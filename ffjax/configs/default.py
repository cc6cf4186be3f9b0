r"""Default: U-Net with an Xception encoder segmenting manipulated pixels, FF++ c23, 256 px.

The paper's setting (Zeng et al. 2019): segment, then read the frame decision off the mask.

Run:
  ffjax train --config default --workdir /tmp/ffjax/unet_xception \
      --config.dataset.data_dir ~/tensorflow_datasets

Every other config starts from `base_config()` here and overrides fields; each locks its
config, so a misspelt override (`--config.bach_size=8`) is an error, not a silent default.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    """Every field, unlocked, for the variants to override before they lock it."""
    config = ml_collections.ConfigDict()

    # --- data -------------------------------------------------------------------------
    config.dataset = ml_collections.ConfigDict()
    config.dataset.data_dir = "~/tensorflow_datasets"  # where `ffjax build-data` wrote it
    config.dataset.name = "faceforensics"               # TFDS dataset folder name
    config.dataset.config_name = "c23"                  # builder config (folder) to read
    config.dataset.train_split = "train"
    config.dataset.eval_split = "val"                   # validated every eval_every_steps
    config.dataset.class_balance = True                 # sample real and fake frames 50/50
                                                        #   (FF++ has 4 fakes per original)
    config.dataset.train_methods = ()                   # train on these methods' fakes only (and every
                                                        #   original): the cross-manipulation protocol;
                                                        #   () = every method
    config.dataset.num_workers = 2                      # grain worker processes (0: in-process)
    config.dataset.prefetch = 2                         # batches each worker keeps ready (in-process
                                                        #   reading without workers: read ahead)

    # Augmentation, identical for image and mask: JPEG on the host (grain workers), the rest
    # inside the jitted training step, on the device (ffjax/data/augment.py).
    config.augment = ml_collections.ConfigDict()
    config.augment.flip = True                          # random horizontal flip
    config.augment.scale_jitter = 0.1                   # random crop of (1-s..1) of the side, resized back
    config.augment.color_jitter = 0.1                   # brightness/contrast/saturation ± this fraction
    config.augment.jpeg_prob = 0.3                      # chance of a JPEG re-compression ...
    config.augment.jpeg_quality = (60, 95)              # ... at a quality drawn from this range
    config.augment.blur_prob = 0.1                      # chance of a Gaussian blur ...
    config.augment.blur_sigma = (0.2, 1.2)              # ... with sigma drawn from this range

    # --- model ------------------------------------------------------------------------
    config.model = "unet_xception"                      # key of ffjax.models.MODELS
    config.model_kwargs = ml_collections.ConfigDict()   # passed to the model's constructor
    config.dtype = "float32"                            # computation dtype (bfloat16 on TPU/GPU)
    config.param_dtype = "float32"                      # parameters stay fp32 under bf16 compute
    config.cpu_ops = "auto"                             # operations on a CPU mesh: native (C++
                                                        #   kernels) | xla (formulations) | stock
                                                        #   (flax/lax only) | auto (native, else
                                                        #   xla; stock on GPU/TPU). Same numbers.
    config.init_from = ""                               # PyTorch/converted weights to start from
                                                        #   (ImageNet encoders, smp U-Nets; see
                                                        #   `ffjax convert`); "" = random init
    config.frame_score_topk = 0.01                      # frame score = mean of the top 1% pixel
                                                        #   probabilities (segmentation models)
    config.frame_score_from = "head"                    # two-head models: frame score from the frame
                                                        #   head ('head') or the mask's top-k ('mask')

    # --- loss -------------------------------------------------------------------------
    config.loss = ml_collections.ConfigDict()
    config.loss.pos_weight = 1.0                        # weight of fake pixels in the BCE
                                                        #   (fake pixels are rare)
    config.loss.dice_weight = 0.5                       # + this × soft Dice of the fake class
    config.loss.frame_weight = 1.0                      # two-head models: + this x the frame head's BCE

    # --- optimisation -----------------------------------------------------------------
    config.batch_size = 32                              # global: all devices of all hosts
    config.grad_accum_steps = 1                         # optax.MultiSteps: update every k steps
    config.optimizer = "adamw"                          # adamw | sgd | lamb | lars
    config.learning_rate = 2e-4                         # at base_batch_size; scaled linearly
    config.base_batch_size = 32                         # ... by batch_size × grad_accum / this
    config.weight_decay = 1e-4
    config.momentum = 0.9                               # sgd and lars
    config.warmup_steps = 500
    config.schedule = "cosine"                          # cosine | constant (after warmup)
    config.grad_clip_norm = 1.0                         # 0 disables clipping
    config.num_train_steps = 20_000

    # --- bookkeeping ------------------------------------------------------------------
    config.seed = 0
    config.log_every_steps = 50
    config.eval_every_steps = 2_000
    config.eval_batch_size = 64                         # global
    config.checkpoint_every_steps = 1_000
    config.keep_checkpoints = 3                         # latest-N kept for resuming
    config.allow_config_change = False                  # resume although model/data settings differ from the checkpoint's
    config.best_metric = "frame/auc"                    # kept in workdir/best by this metric
    config.best_mode = "max"
    config.threshold = 0.5                              # pixel and frame decision threshold
    config.video_aggregation = "mean"                   # frame scores -> video score

    # Multi-host: left empty, `jax.distributed` is started from the environment (TPU pods,
    # SLURM, Open MPI); set these to start it explicitly.
    config.distributed = ml_collections.ConfigDict()
    config.distributed.coordinator_address = ""         # "host:port" of process 0
    config.distributed.num_processes = 1
    config.distributed.process_id = 0
    config.distributed.cpu_collectives = ""             # "gloo" for CPU-only multi-process runs

    return config


def get_config() -> ml_collections.ConfigDict:
    return base_config().lock()
