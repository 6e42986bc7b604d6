"""Inverse autoregressive flow posterior (Kingma et al. 2016) as Keras 3 layers.

q(z|x) is a diagonal Gaussian followed by K IAF steps conditioned on the encoder context h::

    z0 = mean + exp(logvar / 2) * eps                       eps ~ N(0, I), supplied by the caller
    step t:  [m, s] = MADE_t(z, h);  sigma = sigmoid(s)
             z <- sigma * z + (1 - sigma) * m               log-det += sum(log sigma)
    between steps: z <- reverse(z)                          log-det += 0
    log q(z|x) = log N(z0; mean, diag(exp logvar)) - sum_t sum_i log sigma_t,i

Because output i of each MADE depends only on z_<i (in that step's order) and on h, each step's
Jacobian is triangular with diagonal sigma, so log|det| = sum(log sigma) exactly; the reversal is a
permutation (|det| = 1). ``steps=0`` is exactly the diagonal Gaussian. After the last step the
coordinates are put back in z0's order (one more reversal when K - 1 is odd), so at initialisation
z ~ z0 coordinate by coordinate and the encoder mean keeps its meaning for ``decode(mean)``.

Why hand-written and not ``tfb.Invert(tfb.MaskedAutoregressiveFlow(...))``:

* TFP's ``AutoregressiveNetwork`` is a tf_keras model; inside a Keras 3 model its weights are not
  tracked (they never reach ``model.trainable_variables`` nor the optimiser). The MADE here is
  written as Keras 3 layers with masked kernels, so Keras tracks, saves and trains every weight.
* The MAF bijector parameterises ``y = x * exp(log_scale) + shift``; the paper's numerically
  stable gated update would have to be smuggled in as ``log_scale = softplus(-s)`` and
  ``shift = -(1 - sigma) * m / sigma`` — correct (the unit tests check it against TFP) but
  harder to read than the four lines of :class:`IAFStep`. The sampling direction of IAF is one
  parallel pass either way; we never need the (sequential) inverse.

Initialisation: the ``s`` head's bias starts at :data:`GATE_BIAS` = +3 (sigma = 0.953; the paper
suggests "+1 or +2"; we go slightly further so K = 4 steps start closer to the identity) and both
output heads start with small weights (:data:`HEAD_INIT_SCALE`), so m ~ 0 and the flow begins as a
near-identity map that shrinks z by about sigma per step.
"""
from __future__ import annotations

import math

import keras
import numpy as np

__all__ = ["GATE_BIAS", "HEAD_INIT_SCALE", "made_degrees", "MaskedDense", "MADE", "IAFStep",
           "IAFPosterior", "diagonal_log_prob", "reverse_order"]

GATE_BIAS = 3.0          # initial bias of the gate pre-activation s: sigmoid(3) = 0.953
HEAD_INIT_SCALE = 1e-2   # std of the output heads' initial weights (m ~ 0, s ~ GATE_BIAS at init)
_LOG_2PI = math.log(2.0 * math.pi)


def made_degrees(dim: int, hidden: int) -> np.ndarray:
    """Degrees of ``hidden`` units over ``dim`` ordered inputs: unit k sees inputs j < degree[k].

    Degrees cycle through 0..dim-1 so every output has units it may use; degree-0 units see only
    the context h, which is what lets the first output depend on h.
    """
    return np.arange(hidden) % dim


def _made_masks(dim: int, hidden: int, layers: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Masks (in, out) of the hidden layers and of the output heads.

    Input j has degree j; hidden unit degree d sees inputs j < d; a later hidden unit of degree d'
    sees earlier units of degree d <= d'; output i sees hidden units of degree d <= i, hence only
    inputs j < i.
    """
    deg_in = np.arange(dim)
    deg_h = made_degrees(dim, hidden)
    masks = [(deg_in[:, None] < deg_h[None, :]).astype(np.float32)]
    for _ in range(layers - 1):
        masks.append((deg_h[:, None] <= deg_h[None, :]).astype(np.float32))
    out_mask = (deg_h[:, None] <= deg_in[None, :]).astype(np.float32)
    return masks, out_mask


class MaskedDense(keras.layers.Layer):
    """Dense layer whose kernel is multiplied by a fixed 0/1 mask (not a weight, not saved)."""

    def __init__(self, mask: np.ndarray, use_bias: bool = True, bias_value: float = 0.0,
                 kernel_scale: float | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.kernel_mask = np.asarray(mask, dtype=np.float32)
        self.use_bias, self.bias_value, self.kernel_scale = use_bias, bias_value, kernel_scale

    def build(self, input_shape) -> None:
        in_dim, out_dim = self.kernel_mask.shape
        if input_shape[-1] != in_dim:
            raise ValueError(f"{self.name}: expected {in_dim} input features. Received: shape={input_shape}")
        init = (keras.initializers.RandomNormal(stddev=self.kernel_scale) if self.kernel_scale is not None
                else keras.initializers.GlorotUniform())
        self.kernel = self.add_weight(shape=(in_dim, out_dim), initializer=init, name="kernel")
        self.bias = (self.add_weight(shape=(out_dim,), initializer=keras.initializers.Constant(self.bias_value),
                                     name="bias") if self.use_bias else None)

    def call(self, x):
        y = keras.ops.matmul(x, self.kernel * keras.ops.convert_to_tensor(self.kernel_mask, dtype=self.kernel.dtype))
        return y if self.bias is None else y + self.bias


class MADE(keras.layers.Layer):
    """Masked autoencoder with context: ``(z, h) -> (m, s)``, output i a function of z_<i and h.

    Args:
        dim: size of z; context_dim: size of h; hidden: width of each hidden layer;
        layers: number of hidden layers (>= 1); activation: hidden nonlinearity (ELU).
    """

    def __init__(self, dim: int, context_dim: int, hidden: int, layers: int = 2,
                 activation: str = "elu", gate_bias: float = GATE_BIAS, **kwargs) -> None:
        super().__init__(**kwargs)
        if dim < 1 or hidden < 1 or layers < 1 or context_dim < 0:
            raise ValueError(f"MADE needs dim, hidden, layers >= 1 and context_dim >= 0. Received: "
                             f"dim={dim}, hidden={hidden}, layers={layers}, context_dim={context_dim}")
        masks, out_mask = _made_masks(dim, hidden, layers)
        self.depth = len(masks)
        for i, m in enumerate(masks):  # attributes, not a list: tf.train.Checkpoint skips Keras-3 lists
            setattr(self, f"hidden_{i}", MaskedDense(m, name=f"hidden_{i}"))
        # h enters the first hidden layer through an unmasked connection (bias lives in hidden_0).
        self.context = keras.layers.Dense(hidden, use_bias=False, name="context") if context_dim else None
        self.m_head = MaskedDense(out_mask, kernel_scale=HEAD_INIT_SCALE, name="m_head")
        self.s_head = MaskedDense(out_mask, kernel_scale=HEAD_INIT_SCALE, bias_value=gate_bias, name="s_head")
        self.activation = keras.activations.get(activation)

    @property
    def hidden_layers(self) -> list[MaskedDense]:
        """The masked hidden layers in order."""
        return [getattr(self, f"hidden_{i}") for i in range(self.depth)]

    def call(self, z, context=None):
        a = self.hidden_layers[0](z)                       # (B, H)
        if self.context is not None:
            a = a + self.context(context)
        a = self.activation(a)
        for layer in self.hidden_layers[1:]:
            a = self.activation(layer(a))
        return self.m_head(a), self.s_head(a)              # (B, D), (B, D)


class IAFStep(keras.layers.Layer):
    """One gated IAF step ``z -> sigma * z + (1 - sigma) * m``; returns ``(z_new, sum log sigma)``."""

    def __init__(self, dim: int, context_dim: int, hidden: int, layers: int = 2,
                 gate_bias: float = GATE_BIAS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.made = MADE(dim, context_dim, hidden, layers=layers, gate_bias=gate_bias, name="made")

    def call(self, z, context=None):
        m, s = self.made(z, context)
        sigma = keras.ops.sigmoid(s)
        z_new = sigma * z + (1.0 - sigma) * m
        log_det = keras.ops.sum(keras.ops.log_sigmoid(s), axis=-1)  # (B,)
        return z_new, log_det


def diagonal_log_prob(mean, logvar, eps):
    """log N(z0; mean, diag(exp logvar)) of ``z0 = mean + exp(logvar/2) * eps``, per row ``(B,)``."""
    del mean  # z0 - mean = exp(logvar/2) * eps exactly; using eps avoids cancellation
    return -0.5 * keras.ops.sum(_LOG_2PI + logvar + keras.ops.square(eps), axis=-1)


def reverse_order(z):
    """Reverse the latent coordinates (a permutation: log-det 0)."""
    return keras.ops.flip(z, axis=-1)


class IAFPosterior(keras.layers.Layer):
    """Diagonal Gaussian followed by ``steps`` IAF steps conditioned on the context h.

    Args:
        latent_dim: D; context_dim: C (size of h); steps: K >= 0 flow steps;
        hidden: width of each MADE hidden layer; made_layers: hidden layers per MADE (default 2);
        gate_bias: initial bias of the gate pre-activation (default :data:`GATE_BIAS`).

    Raises:
        ValueError: a size is out of range.
    """

    def __init__(self, latent_dim: int, context_dim: int, steps: int, hidden: int,
                 made_layers: int = 2, gate_bias: float | None = None, **kwargs) -> None:
        # A fixed default name (Keras would auto-number a second instance 'iaf_posterior_1') keeps
        # variable paths identical across model builds, so path-keyed checkpoints restore.
        kwargs.setdefault("name", "iaf_posterior")
        super().__init__(**kwargs)
        if steps < 0:
            raise ValueError(f"`steps` must be >= 0. Received: steps={steps}")
        self.latent_dim, self.context_dim, self.steps, self.hidden = latent_dim, context_dim, steps, hidden
        # None reads GATE_BIAS now, not at import: benchmarks/iaf_vs_diagonal.py --gate-bias sets it
        self.made_layers, self.gate_bias = made_layers, GATE_BIAS if gate_bias is None else gate_bias
        for t in range(steps):  # attributes, not a list: tf.train.Checkpoint skips Keras-3 lists
            setattr(self, f"step_{t}", IAFStep(latent_dim, context_dim, hidden, layers=made_layers,
                                               gate_bias=self.gate_bias, name=f"iaf_step_{t}"))

    @property
    def flow_steps(self) -> list[IAFStep]:
        """The K steps in order."""
        return [getattr(self, f"step_{t}") for t in range(self.steps)]

    def flow(self, z0, context):
        """Apply the K steps to ``z0`` ``(B, D)``; returns ``(z, log_det)`` with ``log_det`` ``(B,)``.

        ``log_det`` is log|det dz/dz0| = sum over steps of sum(log sigma).
        """
        z = z0
        log_det = keras.ops.zeros_like(z0[:, 0])
        for t, step in enumerate(self.flow_steps):
            if t > 0:
                z = reverse_order(z)
            z, ld = step(z, context)
            log_det = log_det + ld
        if self.steps > 1 and self.steps % 2 == 0:
            z = reverse_order(z)  # back to z0's coordinates: z ~ z0 at init, decode(mean) stays meaningful
        return z, log_det

    def log_det(self, z0, context):
        """log|det dz/dz0| ``(B,)`` of the K steps at ``z0`` (what :meth:`call` subtracts from log N(z0))."""
        return self.flow(z0, context)[1]

    def call(self, mean, logvar, context, eps):
        """Sample ``z`` and its exact ``log q(z|x)``.

        Args:
            mean, logvar: ``(B, D)`` base diagonal Gaussian; context: ``(B, C)``; eps: ``(B, D)`` N(0, I).

        Returns:
            ``(z, log_q)``: ``(B, D)`` and ``(B,)``.
        """
        z0 = mean + keras.ops.exp(0.5 * logvar) * eps
        z, log_det = self.flow(z0, context)
        return z, diagonal_log_prob(mean, logvar, eps) - log_det

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(latent_dim=self.latent_dim, context_dim=self.context_dim, steps=self.steps,
                      hidden=self.hidden, made_layers=self.made_layers, gate_bias=self.gate_bias)
        return config
