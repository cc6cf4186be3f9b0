"""Model and train-state construction, and the abstract targets checkpoints are restored into.

The trainer, the evaluator, predict and the benchmark all build their models here, so none
of them imports another to get one. The operation set the models are built with is chosen
once per mesh (`model_ops`), never inside a model.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ffjax import models, sharding
from ffjax.platform import selection
from ffjax.platform.cpu import ops as cpu_ops

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree (what a checkpoint holds)."""

    step: jax.Array
    params: nnx.State          # nnx.Param variables
    rest: nnx.State            # BatchNorm statistics and any other non-trainable state
    opt_state: optax.OptState
    rng: jax.Array             # base key; step k uses fold_in(rng, k)


# The part of a TrainState that evaluation and prediction restore: (params, rest).
MODEL_KEYS = ("params", "rest")


def dtype(name: str) -> Any:
    """The jnp dtype of a config dtype name (`config.dtype`, `config.param_dtype`)."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"config.dtype/param_dtype={name!r}: expected one of {sorted(DTYPES)}.") from None


def model_ops(config: Any, mesh: jax.sharding.Mesh) -> models.Ops:
    """The operation set for `config.model` on `mesh` (`config.cpu_ops`, default 'auto').

    Checkpoints from before `cpu_ops` existed carry no such field: they get 'auto'.
    """
    return ops_named(selection.select_cpu_ops(config.get("cpu_ops", "auto"), mesh.devices.flat))


def ops_named(name: str) -> models.Ops:
    """The operation set 'stock', 'xla' or 'native' (the last needs the kernels built)."""
    return models.STOCK if name == "stock" else models.Ops(name=name, **cpu_ops.OPS[name])


def build_model(config: Any, ops: models.Ops = models.STOCK, seed: int | None = None) -> nnx.Module:
    """The model named by `config.model`, built eagerly (use under eval_shape or jit).

    Args:
      config: the run config (model, model_kwargs, dtype, param_dtype, seed).
      ops: the operation set (`model_ops`); building never compiles anything.
      seed: parameter seed; default `config.seed`.
    """
    if config.model not in models.MODELS:
        raise ValueError(f"config.model={config.model!r} is not one of {sorted(models.MODELS)}.")
    # The 'rbg' generator: initialising every parameter shape with threefry compiles one
    # sampler per shape, several times slower to build (measured 5.5 s vs 1.4 s for the test
    # U-Net on CPU); the values only need to be deterministic for a seed, which rbg is.
    return models.create_model(
        config.model,
        rngs=nnx.Rngs(jax.random.key(config.seed if seed is None else seed, impl="rbg")),
        ops=ops,
        dtype=dtype(config.dtype),
        param_dtype=dtype(config.param_dtype),
        **config.model_kwargs.to_dict(),
    )


def create_train_state(config: Any, mesh: jax.sharding.Mesh, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, TrainState]:
    """Creates the model and optimizer state directly on their devices (replicated).

    `nnx.eval_shape` gives the structure without allocating; the jitted initializer then
    writes each array straight into its replicated placement.
    """
    ops = model_ops(config, mesh)
    abstract = nnx.eval_shape(lambda: build_model(config, ops))
    graphdef, _, _ = nnx.split(abstract, nnx.Param, ...)

    def init() -> TrainState:
        model = build_model(config, ops)
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            rest=rest,
            opt_state=tx.init(params),
            rng=jax.random.PRNGKey(config.seed),
        )

    state = jax.jit(init, out_shardings=sharding.replicated(mesh))()
    return graphdef, state


def abstract_model_state(config: Any, mesh: jax.sharding.Mesh) -> tuple[nnx.GraphDef, dict[str, Any], Any]:
    """The restore target of evaluation and prediction: parameters and BatchNorm statistics only.

    Nothing is allocated and no optimizer is built: the shapes come from `nnx.eval_shape`,
    each placed replicated on `mesh`.

    Returns:
      (graphdef, {'params': ..., 'rest': ...} of `jax.ShapeDtypeStruct`s, the abstract model).
    """
    abstract = nnx.eval_shape(lambda: build_model(config, model_ops(config, mesh)))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    replicated = sharding.replicated(mesh)
    target = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), {"params": params, "rest": rest}
    )
    return graphdef, target, abstract


def predict_fn(graphdef: nnx.GraphDef, task: Any) -> Any:
    """`fn(model_state, images_uint8) -> logits` in inference mode; model_state is (params, rest)."""

    def fn(model_state, images):
        return task.forward(nnx.merge(graphdef, *model_state), images, train=False)

    return fn


def count_params(params: Any) -> int:
    """Number of parameters in a params tree (concrete or abstract)."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
