"""Train a small VAE on the embedded digits in Python, then report its ELBO and log-likelihood."""

import vaekit

cfg = vaekit.Config().replace(model={"latent_dim": 8, "hidden": [256, 128]}, train={"epochs": 100, "batch_size": 64})
result = vaekit.train_run(cfg)  # no run directory: nothing is written
x = vaekit.load_dataset("digits").eval_split("test")
print(vaekit.evaluate_elbo(result.model, x).terms())  # {'elbo': …, 'reconstruction': …, 'kl': …}
print(vaekit.log_likelihood(result.model, x, k=1000).mean)  # log p(x) ≥ ELBO, in nats
