"""The Python API given wrong inputs (issue 27, third attack): one `VaekitError` naming the argument, shape or value,
never an error from inside torch, and nothing written before the refusal."""

import numpy as np
import pytest
import torch

import vaekit
from vaekit.errors import VaekitError


@pytest.fixture
def model():
    torch.manual_seed(0)
    return vaekit.VAE(data_dim=10, latent_dim=2, hidden=(16,))


X = (torch.rand(40, 10, generator=torch.Generator().manual_seed(1)) > 0.5).float()


@pytest.mark.parametrize("call, said", [  # the fifth attack's: each ended inside torch or Python
    (lambda m, tmp: vaekit.log_likelihood(m, nan_first(X), k=5), r"^x: example 0 contains NaN or Inf$"),
    (lambda m, tmp: vaekit.evaluate_elbo(m, nan_first(X)), r"^x: example 0 contains NaN or Inf$"),
    (lambda m, tmp: m.encode(nan_first(X)), r"^x: example 0 contains NaN or Inf$"),
    (lambda m, tmp: vaekit.log_likelihood(m, X * 2, k=5), r"^x: values must lie in \[0, 1\] .* found range \[0, 2\]"),
    (lambda m, tmp: vaekit.evaluate_elbo(m, X * 0.5), r"^x holds values other than 0 and 1, which a Bernoulli model"),
    (lambda m, tmp: vaekit.log_likelihood(m, X, k=3, batch_size=0), r"^batch_size must be a whole number ≥ 1, got 0$"),
    (lambda m, tmp: vaekit.evaluate_elbo(m, X, batch_size=-1), r"^batch_size must be a whole number ≥ 1, got -1$"),
    (lambda m, tmp: vaekit.log_likelihood(m, X, k=3, seed=2**70), r"^seed must be a whole number from 0 to 9223372036854775807"),
    (lambda m, tmp: vaekit.log_likelihood(m, X, k=3, y=torch.zeros(40, dtype=torch.long)), r"^y given, but this VAE takes no labels"),
    (lambda m, tmp: m.decode(torch.zeros(2, 3)), r"^decode: z must be finite latents \[N, 2\], got \(2, 3\)$"),
    (lambda m, tmp: m.sample(10**12), r"^sample: 1,000,000,000,000 draws of 10 values are more than the 268,435,456"),
    (lambda m, tmp: m.sample(2, temperature=True), r"^sample: temperature must be a number in \(0, 1000\], got True$"),
    (lambda m, tmp: vaekit.load(tmp / "run", model="x"), r"^vaekit.load: model must be the torch module .* got str$"),
    (lambda m, tmp: vaekit.load(tmp / "run", model=vaekit.VAE(data_dim=10, latent_dim=3, hidden=(16,))),
     r"weights do not match the model given to vaekit.load \(first differences"),
    (lambda m, tmp: vaekit.save(m, 123), r"^vaekit.save: name a folder to write the model into \(got 123\)$"),
    (lambda m, tmp: vaekit.save(m, "a\0b"), r"^vaekit.save: name a folder"),
    (lambda m, tmp: vaekit.fit(m, X, out="", progress=False), r"^vaekit.fit: out must name a folder for the run"),
    (lambda m, tmp: vaekit.evaluate_elbo("run", X), r"^model must be a VAE \(vaekit.load\(RUN\), vaekit.VAE\(…\)\), got str$"),
    (lambda m, tmp: vaekit.log_likelihood(torch.nn.Linear(2, 2), X), r"^model must be a VAE .* got Linear$"),
    (lambda m, tmp: vaekit.load(None), r"^vaekit.load: name the run directory to load, got None$"),
    (lambda m, tmp: vaekit.fit(m, X, out="a\0b", progress=False), r"^vaekit.fit: out must name a folder for the run"),
    (lambda m, tmp: vaekit.VAE(data_dim=4, latent_dim=-1), r"^VAE: latent_dim must be sizes of whole numbers ≥ 1, got -1$"),
    (lambda m, tmp: vaekit.VAE(data_dim=4, latent_dim=2, hidden=(0,)), r"^VAE: hidden must be sizes of whole numbers"),
    # the sixth attack's: a typo's size allocated until torch failed (1.6 TB), complex input lost its imaginary part,
    # empty latents decoded to an empty tensor (the CLI refuses them)
    (lambda m, tmp: vaekit.VAE(data_dim=10**9, latent_dim=2), (r"^VAE: data_dim 1000000000, latent_dim 2, hidden \(400,\) "
     r"make ≈ 8e\+11 weights \(2,980 GiB in float32\), more than vaekit builds")),
    (lambda m, tmp: vaekit.VAE(data_dim=4, latent_dim=2, hidden=[10**6] * 2), r"^VAE: .* make ≈ 2e\+12 weights"),
    (lambda m, tmp: vaekit.VAE(data_dim=4, latent_dim=[2, 2], layer_hidden=[10**6] * 2), r"layer_hidden .* weights"),
    (lambda m, tmp: m.encode(X.to(torch.complex64)), r"^x must hold real numbers, got complex64$"),
    (lambda m, tmp: vaekit.log_likelihood(m, X.to(torch.complex64)), r"^x must hold real numbers, got complex64$"),
    (lambda m, tmp: m.decode(torch.zeros(0, 2)), r"^decode: z must be finite latents \[N, 2\], got \(0, 2\) \(no latents\)$"),
])
def test_the_fifth_attacks_api_inputs_are_one_line(model, tmp_path, call, said):
    vaekit.save(model, tmp_path / "run")
    with pytest.raises(VaekitError, match=said):
        call(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_image_model_refuses_examples_of_another_shape_with_as_many_values():
    """[N, 64, 1] given to a [1, 8, 8] model was read as its images (the sixth attack); [N, 64] rows and [N, 1, 8, 8]
    images are what it takes, and give the same numbers."""
    torch.manual_seed(0)
    m = vaekit.VAE(data_dim=64, latent_dim=2, hidden=(16,), arch="conv", data_shape=(1, 8, 8))
    x = (torch.rand(5, 64, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    with pytest.raises(VaekitError, match=r"^x holds examples of shape \(64, 1\); the model takes images \(1, 8, 8\) "
                       r"\(or rows of 64\)$"):
        vaekit.log_likelihood(m, x.reshape(5, 64, 1), k=3)
    assert torch.equal(m.encode(x.reshape(5, 1, 8, 8)), m.encode(x))


def nan_first(x):
    x = x.clone()
    x[0, 0] = float("nan")
    return x


def test_decode_reconstruct_and_the_module_take_what_encode_takes(model):
    x = X[:3]
    z = model.encode(x)
    assert torch.equal(model.decode(z.double()), model.decode(z)) and torch.equal(model.decode(z.numpy()), model.decode(z))
    assert torch.equal(model.decode(torch.zeros(2, 2, dtype=torch.long)), model.decode(torch.zeros(2, 2)))
    assert torch.equal(model.reconstruct(x.numpy()), model.reconstruct(x))
    assert torch.equal(model(x.numpy()).mean, model(x).mean)
    torch.manual_seed(3)
    tempered = model.sample(3, temperature=np.float32(0.5))  # refused as "not in (0, 1000]" before
    torch.manual_seed(3)
    assert torch.equal(tempered, model.sample(3, temperature=0.5))


@pytest.mark.parametrize("call, said", [
    (lambda m, tmp: vaekit.fit(m, X[:, :7], out=tmp / "w7", progress=False),  # a torch matmul error, after config.json
     r"^x holds examples of shape \(7,\) \(7 values\); the model takes 10$"),
    (lambda m, tmp: vaekit.fit(torch.nn.Linear(3, 3), X, progress=False), r"vaekit.fit trains a VAE .* got Linear$"),
    (lambda m, tmp: vaekit.log_likelihood(m, X, k=0), r"^k must be a whole number of importance samples from 1 to 1,000,000, got 0$"),
    (lambda m, tmp: vaekit.log_likelihood(m, X[:0], k=5), r"^x holds no examples \(shape \(0, 10\)\)$"),
    (lambda m, tmp: vaekit.evaluate_elbo(m, X[:0]), r"^x holds no examples \(shape \(0, 10\)\)$"),
    (lambda m, tmp: m.sample(-1), r"^sample: n must be a whole number of draws ≥ 1, got -1$"),
    (lambda m, tmp: m.sample(2, temperature=float("nan")), r"^sample: temperature must be a number in \(0, 1000\], got nan$"),
    (lambda m, tmp: m.sample(2, temperature=0), r"^sample: temperature must be a number in \(0, 1000\], got 0$"),
])
def test_wrong_inputs_are_one_line_and_write_nothing(model, tmp_path, call, said):
    with pytest.raises(VaekitError, match=said):
        call(model, tmp_path)
    assert not (tmp_path / "w7").exists()


def test_log_likelihood_takes_a_numpy_array_as_its_tensor(model):
    as_array = vaekit.log_likelihood(model, X.numpy(), k=20, seed=3)
    as_tensor = vaekit.log_likelihood(model, X, k=20, seed=3)
    assert torch.equal(as_array.per_example, as_tensor.per_example)
    assert np.isfinite(as_array.mean)


def test_images_given_to_a_model_of_rows_are_its_rows(model):
    """[N, 1, 2, 5] examples for a model of 10 values passed the width check and failed in the first layer."""
    images = X.reshape(40, 1, 2, 5)
    assert torch.equal(vaekit.log_likelihood(model, images, k=20, seed=3).per_example,
                       vaekit.log_likelihood(model, X, k=20, seed=3).per_example)
    torch.manual_seed(4)
    from_images = vaekit.evaluate_elbo(model, images, num_samples=3)
    torch.manual_seed(4)
    assert from_images == vaekit.evaluate_elbo(model, X, num_samples=3)
    assert torch.equal(model.encode(images[:3]), model.encode(X[:3]))


def test_encode_and_decode_take_arrays_and_refuse_what_the_networks_cannot(model):
    """encode of NumPy, int64 or float64 examples gave torch errors (a dtype clash, a NumPy argument); of the wrong
    width a matmul error; decode of NaN a torch constraint error, of a 1-D z a silently reshaped result."""
    x = X[:3]
    want = model.encode(x)
    for other in (x.numpy(), x.long(), x.double()):
        assert torch.equal(model.encode(other), want)
    with pytest.raises(VaekitError, match=r"^x holds examples of shape \(5,\) \(5 values\); the model takes 10$"):
        model.encode(torch.zeros(3, 5))
    with pytest.raises(VaekitError, match=r"^decode: z must be finite latents \[N, 2\], got \(3, 2\) holding NaN or Inf$"):
        model.decode(torch.full((3, 2), float("nan")))
    with pytest.raises(VaekitError, match=r"^decode: z must be finite latents \[N, 2\], got \(2,\)$"):
        model.decode(torch.zeros(2))


def test_a_grid_of_no_images_is_one_line():
    from vaekit.pictures.png import image_grid

    with pytest.raises(VaekitError, match=r"^no images to draw \(0 rows\)$"):  # it divided by zero
        image_grid(torch.zeros(0, 64), (1, 8, 8))
    assert tuple(image_grid(torch.zeros(1, 64), (1, 8, 8)).shape) == (10, 10, 1)
