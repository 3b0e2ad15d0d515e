"""dgmlib.experiment: build specs (nested modules, classes, dicts; tensors refused) rebuild the same
module from the same seed, saved models rebuild themselves, the results schema and manifest, and
seeded epoch orders."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dgmlib.experiment import (
    MANIFEST,
    RESULTS_SCHEMA,
    build,
    epoch_order,
    load_model_file,
    make,
    model_entry,
    model_tensors,
    resumed_entry,
    save_model,
    spec_of,
    train_each,
    write_results,
)
from dgmlib.io import (
    CheckpointError,
    load_checkpoint,
    read_json,
    save_checkpoint,
    sha256_file,
    sidecar_path,
)
from dgmlib.models.priors import VampPrior, make_prior
from dgmlib.models.vae import VAE, BernoulliDecoder, GaussianDecoder, MLPGaussianEncoder


def small_vae() -> VAE:
    """A VAE of three modules made by ``make``, with a class argument (ReLU) and a tuple."""
    enc = make(MLPGaussianEncoder, x_dim=12, hidden=5, z_dim=2, activation=nn.ReLU)
    dec = make(GaussianDecoder, z_dim=2, hidden=5, x_shape=(3, 4), variance="fixed", sigma=0.5)
    return make(VAE, encoder=enc, decoder=dec, prior=make_prior("mog", 2, n_components=3))


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


# --------------------------------------------------------------------------------------------
# Build specs
# --------------------------------------------------------------------------------------------


def test_spec_records_nested_modules_classes_and_tuples():
    spec = small_vae().build_spec
    assert spec["class"] == "dgmlib.models.vae:VAE"
    enc, dec, prior = (spec["args"][k] for k in ("encoder", "decoder", "prior"))
    assert enc == {
        "class": "dgmlib.models.vae:MLPGaussianEncoder",
        "args": {
            "x_dim": 12,
            "hidden": 5,
            "z_dim": 2,
            "activation": {"type": "torch.nn.modules.activation:ReLU"},
        },
    }
    assert dec["args"]["x_shape"] == [3, 4] and dec["args"]["variance"] == "fixed"
    assert prior == {
        "class": "dgmlib.models.priors:MixtureOfGaussiansPrior",
        "args": {"z_dim": 2, "n_components": 3},
    }
    assert json.loads(json.dumps(spec)) == spec  # plain JSON


def test_build_from_the_json_spec_repeats_the_construction():
    """From the same torch seed, build(spec) draws the same initial weights as make did."""
    torch.manual_seed(0)
    model = small_vae()
    spec = json.loads(json.dumps(model.build_spec))
    torch.manual_seed(0)
    again = build(spec)
    assert type(again) is VAE and isinstance(again.encoder.net[1], nn.ReLU)
    assert again.decoder.x_shape == (3, 4) and again.decoder.variance == "fixed"
    assert_same_state(model, again)
    assert spec_of(again) == spec
    torch.manual_seed(1)
    assert not torch.equal(build(spec).encoder.net[0].weight, model.encoder.net[0].weight)


def test_dict_arguments_and_torch_classes():
    """A dict of modules (torch's ModuleDict) and a nested dict of numbers survive the trip."""
    torch.manual_seed(0)
    heads = make(
        nn.ModuleDict,
        modules={"a": make(nn.Linear, in_features=2, out_features=3), "b": make(nn.Tanh)},
    )
    spec = json.loads(json.dumps(heads.build_spec))
    assert spec["args"]["modules"]["dict"]["a"]["class"] == "torch.nn.modules.linear:Linear"
    torch.manual_seed(0)
    again = build(spec)
    assert isinstance(again["a"], nn.Linear) and isinstance(again["b"], nn.Tanh)
    assert_same_state(heads, again)
    # make_prior passes the prior's keyword arguments into its spec
    prior = make_prior("flow", 2, n_layers=2, hidden=4)
    assert prior.build_spec["args"] == {"z_dim": 2, "n_layers": 2, "hidden": 4}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"init": torch.rand(3, 4)}, "tensors cannot be part of a build spec"),
        ({"x_shape": [torch.tensor(4)]}, "tensors cannot be part of a build spec"),
        ({"x_shape": {1: 4}}, "dict arguments need string keys"),
        ({"x_shape": object()}, "cannot record an argument of type object"),
    ],
)
def test_make_refuses_what_a_spec_cannot_hold(kwargs, match):
    with pytest.raises(TypeError, match=f"VampPrior: {match}"):
        make(VampPrior, z_dim=2, n_pseudo=3, **kwargs)


def test_modules_without_a_spec_and_foreign_classes_are_refused():
    decoder = make(BernoulliDecoder, z_dim=2, hidden=3, x_shape=4)
    with pytest.raises(TypeError, match="the module MLPGaussianEncoder has no build spec"):
        make(VAE, encoder=MLPGaussianEncoder(4, 3, 2), decoder=decoder)
    with pytest.raises(ValueError, match="has no build spec; create it with"):
        spec_of(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="only dgmlib and torch classes are allowed"):
        build({"class": "os:system", "args": {}})
    with pytest.raises(ValueError, match="a spec is a dict with a 'class' entry"):
        build({"args": {}})


# --------------------------------------------------------------------------------------------
# Saved models
# --------------------------------------------------------------------------------------------


def test_save_model_and_load_model_file(tmp_path):
    torch.manual_seed(0)
    model = small_vae()
    with torch.no_grad():
        model.prior.means.add_(1.0)  # "trained" weights, not the initial ones
    path = tmp_path / "m.safetensors"
    digest = save_model(path, model, epochs=3, note="test")
    assert digest == sha256_file(path) == sidecar_path(path).read_text().split()[0]
    tensors, meta = load_checkpoint(path)
    assert meta == {"spec": model.build_spec, "epochs": 3, "note": "test"}
    assert set(tensors) == set(model_tensors(model)) == {f"model.{k}" for k in model.state_dict()}
    torch.manual_seed(123)  # whatever the seed, the stored weights replace the initial ones
    loaded = load_model_file(path, expected_sha256=digest)
    assert type(loaded) is VAE and not loaded.training
    assert_same_state(model, loaded)
    # the same model and metadata always give the same bytes
    assert save_model(tmp_path / "again.safetensors", model, epochs=3, note="test") == digest
    with pytest.raises(CheckpointError, match="m.safetensors: corrupted checkpoint"):
        load_model_file(path, expected_sha256="0" * 64)


def test_load_model_file_needs_a_spec_and_fitting_weights(tmp_path):
    model = small_vae()
    save_checkpoint(tmp_path / "nospec.safetensors", model_tensors(model), {"epochs": 1})
    with pytest.raises(CheckpointError, match="nospec.safetensors: no build spec"):
        load_model_file(tmp_path / "nospec.safetensors")
    other = make(MLPGaussianEncoder, x_dim=12, hidden=7, z_dim=2)
    save_checkpoint(
        tmp_path / "mismatch.safetensors", model_tensors(other), {"spec": model.build_spec}
    )
    with pytest.raises(CheckpointError, match="mismatch.safetensors: does not fit VAE"):
        load_model_file(tmp_path / "mismatch.safetensors")


# --------------------------------------------------------------------------------------------
# Results and manifest
# --------------------------------------------------------------------------------------------


def test_write_results_schema_and_manifest(tmp_path):
    model = small_vae()
    digest = save_model(tmp_path / "l99_small.safetensors", model)
    entry = model_entry(
        tmp_path / "l99_small.safetensors",
        digest,
        model,
        1.5,
        test={"log_px_z": -80.0, "kl": 20.0, "elbo": -100.0, "nll": 95.0},
        curves=[{"epoch": 1, "elbo": -120.0}],
    )
    # the file's name, not its path; the weights counted by hand: encoder 12-5-5-4 (65 + 30 +
    # 24), decoder 2-5-5-12 (15 + 30 + 72), mixture prior 3 x (2 means + 2 log-variances) + 3
    # logits (15); the decoder's fixed sigma is a buffer, not a weight
    assert entry["checkpoint"] == "l99_small.safetensors" and entry["n_params"] == 251
    models = {
        "small": entry,
        "baseline": {"test": {"nll": 120.0}},  # no checkpoint: not in the manifest
    }
    (tmp_path / MANIFEST).write_text(json.dumps({"l98_other": {"file": "l98_other.safetensors"}}))
    path = write_results(tmp_path, "l99", "99", "python tools/x.py", {"epochs": 1}, models, True)
    assert path == tmp_path / "l99_results.json"
    doc = read_json(path)
    assert doc == {
        "schema": RESULTS_SCHEMA,
        "lecture": "99",
        "command": "python tools/x.py",
        "quick": True,
        "settings": {"epochs": 1},
        "models": models,
    }
    text = path.read_text()
    assert text == json.dumps(doc, indent=1, sort_keys=True) + "\n"  # stable bytes
    manifest = read_json(tmp_path / MANIFEST)
    assert list(manifest) == ["l98_other", "l99_small"]  # kept, added, sorted
    assert manifest["l99_small"] == {
        "file": "l99_small.safetensors",
        "sha256": digest,
        "results": "l99_results.json",
        "model": "small",
        "command": "python tools/x.py",
    }


@pytest.mark.parametrize(
    "models",
    [
        {"m": {"test": {"recon": 80.0}}},
        {"m": {"curves": [{"epoch": 1, "recon": 80.0}]}},
    ],
    ids=["test", "curves"],
)
def test_write_results_refuses_the_ambiguous_recon(tmp_path, models):
    with pytest.raises(ValueError, match="has the key 'recon'; write log_px_z"):
        write_results(tmp_path, "l99", "99", "cmd", {}, models)
    assert list(tmp_path.iterdir()) == []  # nothing written


# --------------------------------------------------------------------------------------------
# Epochs
# --------------------------------------------------------------------------------------------


def test_epoch_order_is_a_seeded_permutation_per_epoch():
    n = 50
    orders = [epoch_order(n, e) for e in range(4)]
    for e, order in enumerate(orders):
        assert sorted(order.tolist()) == list(range(n))
        # the documented seed, so another program can reproduce the order
        g = torch.Generator().manual_seed(1000 * (0 + 1) + e)
        assert torch.equal(order, torch.randperm(n, generator=g))
    assert len({tuple(o.tolist()) for o in orders}) == 4  # every epoch has its own order
    # each epoch on its own: no state carried between calls (what resuming needs)
    torch.manual_seed(99)
    assert torch.equal(epoch_order(n, 3), orders[3])
    assert not torch.equal(epoch_order(n, 3, seed=1), orders[3])
    assert torch.equal(
        epoch_order(n, 3, seed=1), torch.randperm(n, generator=torch.Generator().manual_seed(2003))
    )


def test_resumed_entry_verifies_the_checkpoint_and_write_results_removes_the_resume_state(
    tmp_path,
):
    ckpt, cache = tmp_path / "l99_small.safetensors", tmp_path / "resume" / "small.json"
    assert resumed_entry(cache, ckpt) is None  # nothing trained yet
    model = small_vae()
    entry = model_entry(ckpt, save_model(ckpt, model), model, 2.0, test={"elbo": -100.0})
    assert resumed_entry(cache, ckpt) is None  # trained, but interrupted before the evaluation
    cache.parent.mkdir()
    cache.write_text(json.dumps(entry))
    assert resumed_entry(cache, ckpt) == entry
    data = bytearray(ckpt.read_bytes())
    data[-1] ^= 1  # one flipped bit in the weights
    ckpt.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="l99_small.safetensors"):
        resumed_entry(cache, ckpt)
    write_results(tmp_path, "l99", "99", "cmd", {}, {"small": entry}, resume_dir=cache.parent)
    assert not cache.parent.exists() and (tmp_path / "l99_results.json").is_file()


def test_train_each_runs_only_the_models_an_interruption_left(tmp_path):
    calls = []

    def run(key, checkpoint):
        calls.append(key)
        if key == "b" and len(calls) == 2:
            raise KeyboardInterrupt  # interrupted while training the second model
        model = small_vae()
        return model_entry(checkpoint, save_model(checkpoint, model), model, 1.0, key=key)

    with pytest.raises(KeyboardInterrupt):
        train_each(["a", "b", "c"], tmp_path, "l99", tmp_path / "resume", run)
    entries = train_each(["a", "b", "c"], tmp_path, "l99", tmp_path / "resume", run)
    assert calls == ["a", "b", "b", "c"]  # "a" was not trained again
    assert [e["key"] for e in entries.values()] == ["a", "b", "c"]
    assert entries["a"]["checkpoint"] == "l99_a.safetensors"
