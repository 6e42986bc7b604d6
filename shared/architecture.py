"""Framework-free layer plans: both backends build their networks from these lists.

One plan, two builders: ``facevae`` (PyTorch) and ``facevae_tf`` (Keras) walk the same list of
:class:`Layer` records in the same order, which is what makes their shapes equal and lets the
parity suite move weights between them layer by layer.

Conventions every builder must honour:

* Images are ``(N, 1, H, W)`` in torch and ``(N, H, W, 1)`` in TF. ``flatten`` therefore orders
  features (C, H, W) in torch and (H, W, C) in TF; weight conversion permutes the first dense
  layer after ``flatten`` (and the last before ``unflatten``) accordingly.
* ``conv``/``deconv`` padding is symmetric (``padding`` pixels on every side), as in PyTorch.
  The kernels chosen here (3×3 s1 p1, 4×4 s2 p1, 2×2 s2 p0) coincide with Keras ``'same'``
  (or ``'valid'`` for p0), so no explicit ZeroPadding is needed.
* ``bn`` uses eps=1e-5 and PyTorch momentum 0.1 (Keras momentum 0.9).
* ``lrelu`` uses ``slope`` (0.2 in ``default``; 0.01, PyTorch's default, in ``seed``).
* Decoders end with a layer producing logits (no sigmoid); the likelihood applies it.
* Initialisation is the same distribution on both sides: every conv/deconv/linear kernel and bias
  is U(±1/√fan_in), PyTorch's default (Keras: ``VarianceScaling(1/3, 'fan_in', 'uniform')`` kernels
  and ``RandomUniform`` biases; a transposed conv's fan_in is out_channels·k·k on both sides).
  Zero biases were tried: with ReLU on all-positive faces they leave whole channels dead.
* The ``logvar`` head is read through a soft clamp into [LOGVAR_MIN, LOGVAR_MAX]
  (``bounded_logvar`` in each backend's ``losses``). Unbounded, one large Adam step on a few hundred
  real faces sent it to +18 (a rate of 4e5 nats) and then to −23, and the run never recovered; a
  posterior wider than e² times the prior is never useful, and σ below e⁻⁵ ≈ 0.007 of the prior's
  scale adds no precision a decoder can use.
"""
from __future__ import annotations

from dataclasses import dataclass

from shared.config import ModelConfig

__all__ = ["Layer", "VAEPlan", "conv_trunk", "dense_stack", "vae_plan", "BN_EPS", "BN_MOMENTUM", "LOGVAR_MIN",
           "LOGVAR_MAX", "MIN_SIGMA"]

BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # PyTorch convention; Keras momentum = 1 - BN_MOMENTUM
LOGVAR_MIN, LOGVAR_MAX = -10.0, 2.0  # soft bounds of the posterior log-variance (see above)
MIN_SIGMA = 1e-3  # floor of the learned per-image decoder σ of the gaussian likelihood


@dataclass(frozen=True)
class Layer:
    """One layer of a plan.

    ``kind`` is one of ``conv``, ``deconv``, ``maxpool``, ``bn`` (over channels or features),
    ``relu``, ``lrelu``, ``linear``, ``flatten``, ``unflatten``.
    """

    kind: str
    in_dim: int = 0          # channels (conv, deconv, bn after conv) or features (linear, bn1d)
    out_dim: int = 0
    kernel: int = 0
    stride: int = 1
    padding: int = 0
    slope: float = 0.0       # lrelu negative slope
    shape: tuple[int, ...] = ()  # unflatten target (C, H, W)


def _act(preset: str) -> Layer:
    return Layer("lrelu", slope=0.2) if preset == "default" else Layer("lrelu", slope=0.01)


def conv_trunk(channels: tuple[int, ...], preset: str, in_channels: int = 1) -> list[Layer]:
    """Downsampling conv blocks, each halving H and W.

    ``seed``: Conv3×3 s1 p1 → ReLU → MaxPool2 → BN.   ``default``: Conv4×4 s2 p1 → BN → LeakyReLU(0.2).
    """
    layers: list[Layer] = []
    c_in = in_channels
    for c in channels:
        if preset == "seed":
            layers += [Layer("conv", c_in, c, kernel=3, stride=1, padding=1), Layer("relu"),
                       Layer("maxpool", kernel=2, stride=2), Layer("bn", c, c)]
        else:
            layers += [Layer("conv", c_in, c, kernel=4, stride=2, padding=1), Layer("bn", c, c), _act(preset)]
        c_in = c
    return layers


def dense_stack(in_dim: int, dims: tuple[int, ...], preset: str) -> list[Layer]:
    """Linear blocks: ``seed`` Linear → LeakyReLU → BN1d; ``default`` Linear → LeakyReLU(0.2)."""
    layers: list[Layer] = []
    for d in dims:
        layers += [Layer("linear", in_dim, d), _act(preset)]
        if preset == "seed":
            layers.append(Layer("bn", d, d))
        in_dim = d
    return layers


def _deconv_stack(channels: tuple[int, ...], preset: str) -> list[Layer]:
    """Upsampling blocks mirroring :func:`conv_trunk`, ending in a 1-channel logits layer."""
    rev = list(reversed(channels)) + [1]
    layers: list[Layer] = []
    for i, (c_in, c_out) in enumerate(zip(rev[:-1], rev[1:])):
        last = i == len(rev) - 2
        if preset == "seed":
            layers.append(Layer("deconv", c_in, c_out, kernel=2, stride=2, padding=0))
            if not last:
                layers += [Layer("relu"), Layer("bn", c_out, c_out)]
        else:
            layers.append(Layer("deconv", c_in, c_out, kernel=4, stride=2, padding=1))
            if not last:
                layers += [Layer("bn", c_out, c_out), _act(preset)]
    return layers


@dataclass(frozen=True)
class VAEPlan:
    """The full VAE plan; heads are plain linear layers (no activation).

    Attributes:
        encoder: conv trunk + ``flatten``; output has ``flat_dim`` features.
        encoder_dense: dense stack; its first ``linear`` takes ``flat_dim + label_dim`` inputs
            (conditional models concatenate the label vector to the flattened features).
        feature_dim: width of the encoder's last hidden layer, input of the heads.
        latent_dim, label_dim, context_dim: sizes of z, the label vector and the IAF context h.
        decoder: dense stack from ``latent_dim + label_dim`` (z concatenated with labels), the
            projection to ``flat_dim``, ``unflatten`` to ``bottleneck`` and the deconv stack to logits.
    """

    encoder: tuple[Layer, ...]
    flat_dim: int
    encoder_dense: tuple[Layer, ...]
    feature_dim: int
    latent_dim: int
    label_dim: int
    context_dim: int
    bottleneck: tuple[int, int, int]
    decoder: tuple[Layer, ...]

    @property
    def heads(self) -> dict[str, Layer]:
        """Linear heads: ``mean``, ``logvar`` (and ``context`` for IAF) from the encoder features;
        conditional models add ``prior_shift`` from the label vector (the label-dependent prior mean,
        see ``facevae_tf.models.ConditionalVAE``)."""
        heads = {"mean": Layer("linear", self.feature_dim, self.latent_dim),
                 "logvar": Layer("linear", self.feature_dim, self.latent_dim)}
        if self.context_dim:
            heads["context"] = Layer("linear", self.feature_dim, self.context_dim)
        if self.label_dim:
            heads["prior_shift"] = Layer("linear", self.label_dim, self.latent_dim)
        return heads


def vae_plan(cfg: ModelConfig) -> VAEPlan:
    """Build the VAE plan of ``cfg`` (``vae``, ``cvae`` and ``iaf`` share it)."""
    side = cfg.image_size // 2 ** len(cfg.channels)
    bottleneck = (cfg.channels[-1], side, side)
    flat = bottleneck[0] * side * side
    enc = conv_trunk(cfg.channels, cfg.preset) + [Layer("flatten")]
    enc_dense = dense_stack(flat + cfg.label_dim, cfg.hidden_dims, cfg.preset)
    dec_dims = tuple(reversed(cfg.hidden_dims))
    dec = dense_stack(cfg.latent_dim + cfg.label_dim, dec_dims, cfg.preset)
    dec += [Layer("linear", dec_dims[-1], flat), _act(cfg.preset)]
    dec += [Layer("unflatten", shape=bottleneck)] + _deconv_stack(cfg.channels, cfg.preset)
    return VAEPlan(encoder=tuple(enc), flat_dim=flat, encoder_dense=tuple(enc_dense),
                   feature_dim=cfg.hidden_dims[-1], latent_dim=cfg.latent_dim, label_dim=cfg.label_dim,
                   context_dim=cfg.context_dim if cfg.family == "iaf" else 0,
                   bottleneck=bottleneck, decoder=tuple(dec))
