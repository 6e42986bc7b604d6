"""Keras 3 models ``vae``, ``cvae`` and ``iaf``, one base class built from :func:`shared.architecture.vae_plan`.

Every loss term is computed explicitly by :meth:`FaceVAE.loss_terms` (never through ``add_loss``:
the original conditional VAE lost its KL term that way). The training engine only reads ``terms["loss"]``.

Layer order and names follow the plan (``encoder_*``, ``encoder_dense_*``, ``head_mean``,
``head_logvar``, ``head_context``, ``decoder_*``); see :meth:`FaceVAE.plan_layers`.

Precision: :func:`set_precision` gives the plan layers a ``mixed_bfloat16`` / ``mixed_float16``
dtype policy (per layer, never Keras' global policy, so no other model in the process changes).
Variables stay float32; the heads and the decoder logits are cast to float32, so the losses, the
KL and the IAF flow are computed in float32.

Data parallelism (``TrainConfig.devices``): :func:`build_model` with ``synchronized_bn=True`` gives
BatchNorm global-batch statistics under a ``tf.distribute`` strategy, and :meth:`FaceVAE.batch_terms`
turns per-image terms gathered from every replica into the batch terms, so the distributed step
(:mod:`facevae_tf.distributed`) computes the single-device loss. The weights are the same either way.
"""
from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from facevae_tf.layers import apply_stack, build_stack, dense
from facevae_tf.losses import bounded_logvar, combine_terms, kl_diag_normal, log_normal_diag, log_standard_normal, recon_nll
from shared.architecture import vae_plan
from shared.config import ModelConfig
from shared.errors import ConfigError

__all__ = ["FaceVAE", "ConditionalVAE", "IAFVAE", "build_model", "set_precision", "MODEL_CLASSES", "DTYPE_POLICIES"]

# TrainConfig.precision -> the Keras dtype policy of the plan layers
DTYPE_POLICIES = {"32": "float32", "bf16": "mixed_bfloat16", "16": "mixed_float16"}


class FaceVAE(keras.Model):
    """Convolutional VAE with a diagonal Gaussian posterior (family ``vae``).

    Args:
        config: the model config; ``config.family`` picks the subclass via :func:`build_model`.
        synchronized_bn: BatchNorm statistics over every replica of a ``tf.distribute`` strategy.

    Inputs are images ``x`` ``(B, H, W, 1)`` float in [0, 1] and labels ``y`` ``(B, label_dim)``
    (``label_dim`` is 0 for unconditional models, so ``y`` may be ``(B, 0)``).
    """

    conditional = False

    def __init__(self, config: ModelConfig, synchronized_bn: bool = False, **kwargs):
        super().__init__(name=kwargs.pop("name", f"facevae_{config.family}"), **kwargs)
        self.model_config = config
        self.plan = plan = vae_plan(config)
        self.latent_dim = plan.latent_dim
        self.label_dim = plan.label_dim
        self.encoder_layers = build_stack(plan.encoder, "encoder", synchronized_bn)
        self.encoder_dense = build_stack(plan.encoder_dense, "encoder_dense", synchronized_bn)
        heads = plan.heads
        self.head_mean = dense(heads["mean"], "head_mean")
        self.head_logvar = dense(heads["logvar"], "head_logvar")
        self.head_context = (dense(heads["context"], "head_context")
                             if "context" in heads else None)
        # zeros: at initialisation the prior is N(0, I) for every label, the plain conditional VAE
        self.head_prior_shift = (keras.layers.Dense(heads["prior_shift"].out_dim, kernel_initializer="zeros",
                                                    bias_initializer="zeros", name="head_prior_shift")
                                 if "prior_shift" in heads else None)
        self.decoder_layers = build_stack(plan.decoder, "decoder", synchronized_bn)
        self.flow = self._make_flow(config)
        self._build_all()

    # -- construction -------------------------------------------------------------------------
    def _build_all(self) -> None:
        """Create every weight by running one tiny forward pass (inference mode, no state change)."""
        s = self.model_config.image_size
        x = tf.zeros((1, s, s, 1))
        y = tf.zeros((1, self.label_dim))
        post = self.posterior(x, y, training=False)
        self.sample_posterior(post, tf.zeros((1, self.latent_dim)))
        self.decode_logits(post["mean"], y, training=False)
        self.built = True

    def _make_flow(self, config: ModelConfig) -> Optional[keras.layers.Layer]:
        return None

    def plan_layers(self) -> list[keras.layers.Layer]:
        """Every weighted or stateless layer in plan order (encoder, encoder dense, heads, decoder)."""
        heads = [self.head_mean, self.head_logvar] + [h for h in (self.head_context, self.head_prior_shift)
                                                      if h is not None]
        return [*self.encoder_layers, *self.encoder_dense, *heads, *self.decoder_layers]

    # -- networks -----------------------------------------------------------------------------
    def _with_labels(self, h: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return tf.concat([h, tf.cast(y, h.dtype)], axis=-1) if self.label_dim else h

    def prior_mean(self, y: tf.Tensor) -> Optional[tf.Tensor]:
        """The label-dependent prior mean ``(B, D)`` float32 of conditional models (None otherwise).

        z is exposed standardised: the posterior mean is reported minus this shift and the decoder
        adds it back, so the prior of the z every caller sees stays N(0, I) (see :class:`ConditionalVAE`).
        """
        if self.head_prior_shift is None:
            return None
        return tf.cast(self.head_prior_shift(tf.cast(y, tf.float32)), tf.float32)

    def posterior(self, x: tf.Tensor, y: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        """Encoder heads: ``mean``, ``logvar`` ``(B, D)`` (soft-bounded) and ``context`` ``(B, C)`` for IAF."""
        h = apply_stack(self.encoder_layers, x, training)          # (B, flat_dim), NHWC order
        h = apply_stack(self.encoder_dense, self._with_labels(h, y), training)  # (B, feature_dim)
        # float32 whatever the layers' policy: the clamp, the KL and the flow need it
        out = {"mean": tf.cast(self.head_mean(h), tf.float32),
               "logvar": bounded_logvar(tf.cast(self.head_logvar(h), tf.float32))}
        shift = self.prior_mean(y)
        if shift is not None:
            out["mean"] = out["mean"] - shift
        if self.head_context is not None:
            out["context"] = tf.cast(self.head_context(h), tf.float32)
        return out

    def decode_logits(self, z: tf.Tensor, y: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Decoder logits ``(B, H, W, 1)``, float32, from z ``(B, D)`` (and labels for conditional models)."""
        shift = self.prior_mean(y)
        if shift is not None:
            z = tf.cast(z, tf.float32) + shift
        return tf.cast(apply_stack(self.decoder_layers, self._with_labels(z, y), training), tf.float32)

    def sample_posterior(self, post: dict[str, tf.Tensor], eps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Reparameterised ``z = mean + σ·eps`` and its exact ``log q(z|x)`` ``(B,)``."""
        z = post["mean"] + tf.exp(0.5 * post["logvar"]) * eps
        return z, log_normal_diag(z, post["mean"], post["logvar"])

    def posterior_mode(self, post: dict[str, tf.Tensor]) -> tf.Tensor:
        """The latent decoded by ``reconstruct``: the posterior mean."""
        return post["mean"]

    def rate(self, post: dict[str, tf.Tensor], z: tf.Tensor, log_q: tf.Tensor) -> tf.Tensor:
        """KL(q(z|x) || p(z)): analytic per dimension ``(B, D)`` for the diagonal Gaussian."""
        return kl_diag_normal(post["mean"], post["logvar"])

    def nll(self, x: tf.Tensor, logits: tf.Tensor, weight: Optional[tf.Tensor] = None) -> tf.Tensor:
        """−log p(x|z) per image ``(B,)`` under the configured likelihood (see :func:`recon_nll`)."""
        c = self.model_config
        return recon_nll(x, logits, c.likelihood, c.sigma_mode, c.sigma, weight)

    # -- losses -------------------------------------------------------------------------------
    def loss_terms(self, x: tf.Tensor, y: tf.Tensor, eps: tf.Tensor, beta, training: bool = False,
                   x_in: Optional[tf.Tensor] = None) -> dict[str, tf.Tensor]:
        """Every loss term of a batch, each computed explicitly.

        Args:
            x: images ``(B, H, W, 1)`` in [0, 1]; y: labels ``(B, label_dim)``.
            eps: standard normal noise ``(B, D)`` for the reparameterisation.
            beta: the KL weight (the shared loop passes the warmed-up β in training, the target β in validation).
            training: BatchNorm mode; free bits shape the training loss only.
            x_in: what the encoder reads instead of ``x`` (a denoising VAE's noisy faces,
                ``TrainConfig.input_noise``); the likelihood still scores ``x``. None: ``x``.

        Returns:
            ``loss``, ``distortion``, ``rate``, ``elbo``, ``beta`` (scalars, means over the batch).
        """
        distortion, rate, _ = self.image_terms(x, y, eps, training=training, x_in=x_in)
        terms = self.batch_terms(distortion, rate, beta, training)
        return self.with_label_terms(terms, self.label_image_terms(x, y, eps))

    def label_image_terms(self, x: tf.Tensor, y: tf.Tensor, eps: tf.Tensor) -> dict[str, tf.Tensor]:
        """Per-image terms ``(B,)`` of label consistency (:class:`ConditionalVAE`); none here."""
        return {}

    def with_label_terms(self, terms: dict[str, tf.Tensor], per_image: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """``terms`` with the batch means of :meth:`label_image_terms` added (to ``loss`` too); unchanged here."""
        return terms

    def batch_terms(self, distortion: tf.Tensor, rate: tf.Tensor, beta, training: bool = False
                    ) -> dict[str, tf.Tensor]:
        """Batch terms (:meth:`loss_terms`) from per-image terms of :meth:`image_terms` (free bits in training)."""
        free_bits = self.model_config.free_bits if training else 0.0
        return combine_terms(distortion, rate, beta, free_bits, self.latent_dim)

    def image_terms(self, x: tf.Tensor, y: tf.Tensor, eps: tf.Tensor, training: bool = False,
                    x_in: Optional[tf.Tensor] = None) -> tuple[tf.Tensor, tf.Tensor, dict[str, tf.Tensor]]:
        """Per-image distortion ``(B,)``, rate (``(B, D)`` analytic or ``(B,)`` sampled) and the posterior heads.

        The posterior reads ``x_in`` when given (see :meth:`loss_terms`), the likelihood always scores ``x``.
        """
        post = self.posterior(x if x_in is None else x_in, y, training=training)
        z, log_q = self.sample_posterior(post, eps[:, :self.latent_dim])  # a cvae's ε may carry more columns
        distortion = self.nll(x, self.decode_logits(z, y, training=training))
        return distortion, self.rate(post, z, log_q), post

    def log_weights(self, x: tf.Tensor, y: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        """Importance log-weights ``log p(x|z) + log p(z) − log q(z|x)`` for k samples per image.

        Args:
            x: ``(B, H, W, 1)``; y: ``(B, label_dim)``; eps: ``(B, k, D)`` standard normal noise.

        Returns:
            ``(B, k)`` log-weights (inference mode).
        """
        b, k = tf.shape(eps)[0], tf.shape(eps)[1]
        post = self.posterior(x, y, training=False)
        rep = {name: tf.repeat(v, k, axis=0) for name, v in post.items()}  # (B*k, ·), image-major
        z, log_q = self.sample_posterior(rep, tf.reshape(eps, (-1, self.latent_dim)))
        y_rep = tf.repeat(y, k, axis=0)
        logits = self.decode_logits(z, y_rep, training=False)
        x_rep = tf.repeat(x, k, axis=0)
        log_w = -self.nll(x_rep, logits) + log_standard_normal(z) - log_q
        return tf.reshape(log_w, (b, k))

    def call(self, inputs, training: bool = False):
        """``(x, y) -> logits`` of the posterior-mode reconstruction."""
        x, y = inputs
        post = self.posterior(x, y, training=training)
        return self.decode_logits(self.posterior_mode(post), y, training=training)


class ConditionalVAE(FaceVAE):
    """Conditional VAE (family ``cvae``): the label vector of :func:`shared.faces.label_vectors`
    (gender, ethnicity one-hot, age / 100) is concatenated to the flattened conv features before
    the encoder dense stack and to z before the decoder, as :class:`shared.architecture.VAEPlan` documents.

    The prior is label-dependent, p(z|y) = N(W·y + b, I) (the ``prior_shift`` head, zero at
    initialisation). Why: with the plain N(0, I) prior, a cvae trained on real faces put gender,
    ethnicity and age into z as part of the identity and its decoder ignored the labels (changing
    them moved pixels by 0.01 on average; generated faces matched the requested gender 64 % of the
    time). Label information in z costs only a few nats of KL there, too little to undo; with the
    shifted prior the class-conditional centre of z is learned directly, by regression of the
    posterior means on the labels, so a z drawn from p(z|y) lies where faces with those labels were
    encoded. The shift is applied inside the model: the posterior mean is reported as ``mean − shift``
    and :meth:`decode_logits` adds it back, so every caller keeps sampling z from N(0, I).

    Label consistency (``label_loss`` > 0, :mod:`facevae_tf.label_consistency`): an auxiliary
    classifier, trained on the real faces only, must recognise the requested labels in faces
    generated from the prior as well as it recognises real faces; the decoder and the prior shift pay
    ``label_loss`` × the excess of its loss on them. The step's ε is then ``2·D + 4`` wide (:attr:`noise_dim`).
    """

    conditional = True

    def __init__(self, config: ModelConfig, synchronized_bn: bool = False, **kwargs):
        from facevae_tf.label_consistency import LabelClassifier, noise_dim

        super().__init__(config, synchronized_bn=synchronized_bn, **kwargs)
        self.label_loss = float(config.label_loss)
        self.noise_dim = noise_dim(config.latent_dim, self.label_loss)
        # creates its weights at once; None (label_loss 0) leaves a run's variables as before
        self.label_classifier = LabelClassifier(config.image_size) if self.label_loss > 0 else None

    def label_image_terms(self, x: tf.Tensor, y: tf.Tensor, eps: tf.Tensor) -> dict[str, tf.Tensor]:
        """Label consistency per image (``label_loss`` > 0; else none): ``label_real`` and ``label_generated``.

        ``eps`` is then ``(B, 2·D + 4)``: z's noise, a prior draw, the requested labels and a mirror
        (:mod:`facevae_tf.label_consistency`); the faces are generated as ``generate`` makes them
        (inference mode).
        """
        if self.label_classifier is None:
            return {}
        from facevae_tf.label_consistency import LABEL_NOISE, label_terms, requested_labels

        d = self.latent_dim
        if eps.shape[-1] is not None and eps.shape[-1] != self.noise_dim:
            raise ValueError(f"a cvae with label_loss > 0 needs eps of width 2*latent_dim + {LABEL_NOISE} = "
                             f"{self.noise_dim}. Received: shape={tuple(eps.shape)}")
        y_gen = requested_labels(eps[:, 2 * d:2 * d + 3])
        faces = tf.sigmoid(self.decode_logits(eps[:, d:2 * d], y_gen, training=False))
        return label_terms(self.label_classifier, x, y, faces, y_gen, mirror=eps[:, 2 * d + 3] > 0)

    def with_label_terms(self, terms: dict[str, tf.Tensor], per_image: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """``loss`` gains the classifier's loss on the real faces plus ``label_loss`` × how far its loss on
        each generated face exceeds that on the real ones (:func:`~facevae_tf.label_consistency.excess_over_real`);
        the three are reported (batch means)."""
        if not per_image:
            return terms
        from facevae_tf.label_consistency import excess_over_real

        means = {k: tf.reduce_mean(v) for k, v in per_image.items()}
        excess = excess_over_real(per_image["label_real"], per_image["label_generated"])
        loss = terms["loss"] + means["label_real"] + self.label_loss * excess
        return {**terms, "loss": loss, **means, "label_excess": excess}


class IAFVAE(FaceVAE):
    """VAE whose posterior is a diagonal Gaussian followed by an inverse autoregressive flow (family ``iaf``).

    The flow (:class:`facevae_tf.iaf.IAFPosterior`) is conditioned on the context head h and
    returns log q(z|x) exactly; the rate is the single-sample estimate log q(z|x) − log p(z).
    With ``flow_steps=0`` it reduces to the diagonal Gaussian.
    """

    def _make_flow(self, config: ModelConfig) -> keras.layers.Layer:
        from facevae_tf.iaf import IAFPosterior  # the flow lives in its own module

        # an explicit name keeps variable paths (checkpoint keys) independent of Keras' auto-numbering
        return IAFPosterior(config.latent_dim, config.context_dim, config.flow_steps, config.flow_hidden,
                            name="flow")

    def sample_posterior(self, post: dict[str, tf.Tensor], eps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.flow(post["mean"], post["logvar"], post["context"], eps)

    def posterior_mode(self, post: dict[str, tf.Tensor]) -> tf.Tensor:
        """The flow applied to the base mean (eps = 0), the latent the decoder is trained around."""
        z, _ = self.sample_posterior(post, tf.zeros_like(post["mean"]))
        return z

    def rate(self, post: dict[str, tf.Tensor], z: tf.Tensor, log_q: tf.Tensor) -> tf.Tensor:
        return log_q - log_standard_normal(z)  # (B,) single-sample KL estimate


MODEL_CLASSES = {"vae": FaceVAE, "cvae": ConditionalVAE, "iaf": IAFVAE}


def set_precision(model: FaceVAE, precision: str) -> FaceVAE:
    """Give ``model``'s plan layers the dtype policy of ``TrainConfig.precision`` (in place; returns ``model``).

    Only these layers change: Keras' global policy and every other model keep theirs. The IAF flow
    stays float32 (it is small, and ``log q(z|x)`` is part of the ELBO). Variables are float32
    under every policy, so weights and checkpoints do not depend on the precision.

    Raises:
        ConfigError: an unknown precision.
    """
    if precision not in DTYPE_POLICIES:
        raise ConfigError(f"`precision` must be one of {set(DTYPE_POLICIES)}. Received: precision={precision!r}")
    for layer in model.plan_layers():
        layer.dtype_policy = keras.DTypePolicy(DTYPE_POLICIES[precision])
    return model


def build_model(config: ModelConfig, synchronized_bn: bool = False) -> FaceVAE:
    """The Keras model of ``config.family`` with every weight created.

    Args:
        config: the model config.
        synchronized_bn: BatchNorm with global-batch statistics under a ``tf.distribute`` strategy.

    Raises:
        ConfigError: the family is not a generative model of this backend.
    """
    cls: Optional[type] = MODEL_CLASSES.get(config.family)
    if cls is None:
        raise ConfigError(f"`family` must be one of {set(MODEL_CLASSES)} on the tf backend. "
                          f"Received: family={config.family!r}")
    return cls(config, synchronized_bn=synchronized_bn)
