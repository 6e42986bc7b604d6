# %% [markdown]
# # facevae walkthrough: faces in, a VAE trained, its figures, numbers and a conditional model out
#
# A notebook in `# %%` cells (open it in VS Code / Jupyter with jupytext, or run it as a script:
# `.venv/bin/python examples/walkthrough.py`). Everything returns objects — runs, figures, arrays,
# tables — and the files land in one run folder per model. On 2 CPU cores the whole file takes
# 1 min 45 s with the sizes below (measured, idle); `FACEVAE_WALKTHROUGH_TINY=1` shrinks it to seconds (the
# test suite runs it that way).
#
# To use your own faces, set `DATA` to the Kaggle CSV (`age_gender.csv`, 48×48 grayscale) or a
# UTKFace image folder.

# %%
import os
import tempfile
from pathlib import Path

import facevae      # the PyTorch backend: the whole user API in one import
import facevae_tf   # the same functions on TensorFlow, plus the conditional-model ones

TINY = os.environ.get("FACEVAE_WALKTHROUGH_TINY") == "1"
DATA = "synthetic:240" if TINY else "synthetic:3000"
SMALL_MODEL = dict(image_size=32, channels=(8, 16), hidden_dims=(32,)) if TINY else {}
EPOCHS = 1 if TINY else 8
WORK = Path(tempfile.mkdtemp(prefix="facevae-walkthrough-"))
print("runs go to", WORK)

# %% [markdown]
# ## 1. Data: load, look, filter
# `load_data` gives a `Faces`: `images` (N, H, W) uint8 and a `labels` DataFrame
# (`age` years, `gender` 0 male / 1 female, `ethnicity` 0–4).

# %%
faces = facevae.load_data(DATA, image_size=SMALL_MODEL.get("image_size", 48))
print(len(faces), "faces", faces.images.shape)
print(faces.labels[["age", "gender", "ethnicity"]].describe().loc[["mean", "min", "max"]])

# Faces in memory can be filtered with numpy / pandas and trained on directly:
adults = faces.subset((faces.labels["age"] >= 18).to_numpy().nonzero()[0])
print(len(adults), "adults")

# %% [markdown]
# ## 2. Train a VAE (PyTorch)
# Every CLI option is a keyword argument (`latent_dim`, `beta`, `epochs`, `lr`, `optimizer`, ...).
# Training prints one line per epoch and a progress bar; `verbose=False` silences it.

# %%
run = facevae.train(WORK / "vae", data=adults, latent_dim=16, epochs=EPOCHS, **SMALL_MODEL)
run.metrics[["epoch", "train_loss", "val_loss"]].tail()

# %%
run.figure  # the training curves (also saved as figures/training_curves.png in the run folder)

# %% [markdown]
# ## 3. Numbers on held-out faces
# `evaluate` scores the run's saved test split (never seen in training or model selection).

# %%
metrics = facevae.evaluate(run, iwae_k=8)
print({k: round(metrics[k], 3) for k in ("neg_elbo", "rate", "distortion", "psnr", "ssim") if k in metrics})
print("warnings:", metrics["warnings"])

# %% [markdown]
# ## 4. Figures from the latent space
# Each studio function returns a `Result`: `.figure` (shown by a notebook), `.images` (numpy),
# `.table` (pandas). `save=False` writes nothing; `.save("x.pdf")` writes where you choose.

# %%
grid = facevae.interpolate(run, grid=7, corners="encode", save=False)
print(grid.images.shape)   # (7, 7, H, W): the decoded interpolation matrix
grid.figure

# %%
noisy = facevae.denoise(run, sigmas=(0.1, 0.3), n=64)
noisy.table                # PSNR / SSIM of the VAE against the 3×3 mean and median filters

# %%
filled = facevae.inpaint(run, mask="box", method="iterate", n=64, iterations=20)
filled.table
filled.save(WORK / "inpaint.pdf")

# %% [markdown]
# ## 5. The same model on TensorFlow, and a conditional VAE
# `convert` moves the trained weights to the other backend; a conditional VAE (`cvae`) takes the
# labels into its encoder and decoder, so faces can be generated with chosen attributes.

# %%
tf_run = facevae_tf.convert(run, WORK / "vae_tf")
print(facevae_tf.evaluate(tf_run, iwae_k=8)["psnr"], "dB on TensorFlow (same weights)")

# %%
cvae = facevae_tf.train(WORK / "cvae", data=faces, model="cvae", latent_dim=16, epochs=EPOCHS, **SMALL_MODEL)
women_40 = facevae_tf.generate(cvae, gender="female", ethnicity="Asian", age=40, n=8, save=False)
women_40.figure

# %%
facevae_tf.attribute_grid(cvae).figure   # ethnicity × age band, both genders
