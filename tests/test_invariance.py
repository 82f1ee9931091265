"""Unit tests of advbook.methods.invariance (fully invertible classifier, iCE, metamers)."""

import math

import pytest
import torch

from advbook import params
from advbook.data import TensorData
from advbook.methods import invariance as inv


def tiny_net(shape=(1, 8, 8), classes=10, coupling="allinone", levels=2, dense_blocks=1, seed=0, logit_bn=False):
    torch.manual_seed(seed)
    return inv.InvertibleClassifier(shape, classes, levels=levels, blocks=1, hidden=8, dense_blocks=dense_blocks,
                                    dense_hidden=16, coupling=coupling, logit_bn=logit_bn, seed=seed)


def randomise(net, scale=0.05):
    """Perturb every trainable parameter so that couplings are not the identity (zero-initialised last layers)."""
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn_like(p))
    return net


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.rand(16, 1, 8, 8)


@pytest.mark.parametrize("coupling", inv.COUPLINGS)
def test_reconstruction_is_exact(images, coupling):
    net = randomise(tiny_net(coupling=coupling))
    net.initialize(images)
    err = inv.reconstruction_error(net, images)
    assert err.shape == (16,)
    assert err.max().item() < 1e-4
    z, _ = net.encode(images)
    assert z.shape == (16, 64)
    assert net(images).shape == (16, 10)
    assert torch.equal(net(images), z[:, :10])


def test_logit_batchnorm_reads_scores_without_touching_the_bijection(images):
    net = randomise(tiny_net(logit_bn=True))
    net.initialize(images)
    net.train()
    net(images)  # one batch of statistics for the running averages
    net.eval()
    z, _ = net.encode(images)
    scores = net(images)
    assert not torch.allclose(scores, z[:, :10])
    assert torch.allclose(scores, net.head(z[:, :10]))
    assert inv.reconstruction_error(net, images).max().item() < 1e-4
    # a metamer keeps z_s and therefore the class scores
    x_met = inv.metamers(net, images[:8], images[8:])
    assert torch.allclose(net(x_met), scores[:8], atol=1e-3)

@pytest.mark.parametrize("coupling", inv.COUPLINGS)
def test_logdet_matches_bruteforce_jacobian(coupling):
    """log|det dF/dx| reported by the net equals slogdet of the autograd Jacobian (64x64, in float64)."""
    net = randomise(tiny_net(coupling=coupling), 0.1).double()
    torch.manual_seed(1)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    net.initialize(x)
    _, logdet = net.encode(x[:1])
    jac = torch.autograd.functional.jacobian(lambda v: net.encode(v.view(1, 1, 8, 8))[0].flatten(), x[:1].flatten())
    sign, brute = torch.linalg.slogdet(jac)
    assert sign.item() != 0
    assert abs(brute.item() - logdet.item()) < 1e-6 * max(1.0, abs(brute.item()))
    # and the log-dets of forward and inverse cancel: log|det dF^-1/dz| at z = F(x) is -logdet
    z, ld = net.encode(x)
    x_back, ld_rev = net.inn(z, rev=True)
    assert torch.allclose(ld + ld_rev, torch.zeros_like(ld), atol=1e-8)


def test_cifar_shaped_input_and_bad_levels():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32)
    net = randomise(tiny_net(shape=(3, 32, 32), levels=3))
    net.initialize(x)
    z, logdet = net.encode(x)
    assert z.shape == (4, 3072) and logdet.shape == (4,)
    assert inv.reconstruction_error(net, x).max().item() < 1e-4
    with pytest.raises(ValueError, match="downsampled"):
        tiny_net(shape=(1, 28, 28), levels=3)


def test_metamers_carry_logits_of_a_and_nuisance_of_b(images):
    net = randomise(tiny_net())
    net.initialize(images)
    x_a, x_b = images[:8], images[8:]
    x_met = inv.metamers(net, x_a, x_b)
    z_met, z_a, z_b = inv.encode_all(net, x_met), inv.encode_all(net, x_a), inv.encode_all(net, x_b)
    assert torch.allclose(z_met[:, :10], z_a[:, :10], atol=1e-4)
    assert torch.allclose(z_met[:, 10:], z_b[:, 10:], atol=1e-4)
    # a metamer of an image with itself is the image
    assert torch.allclose(inv.metamers(net, x_a, x_a), x_a, atol=1e-4)
    grid = inv.metamer_grid(net, x_a[:3], x_b[:4])
    assert grid.shape == (12, 1, 8, 8)
    assert torch.allclose(grid[1 * 4 + 2], inv.metamers(net, x_a[1:2], x_b[2:3])[0], atol=1e-5)
    codes = inv.metamer_codes(net, x_a, x_b)
    assert torch.equal(codes[:, :10], z_a[:, :10]) and torch.equal(codes[:, 10:], z_b[:, 10:])
    assert inv.code_roundtrip_error(net, codes).max().item() < 1e-4


def test_metamer_attack_scores_clipped_metamers_against_predictions(images):
    net = randomise(tiny_net())
    net.initialize(images)
    y_a, y_b = torch.zeros(8, dtype=torch.long), torch.ones(8, dtype=torch.long)

    class SaysOne(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.ones(len(x), dtype=torch.long), 10).float()

    out = inv.metamer_attack(net, SaysOne(), images[:8], y_a, images[8:], y_b)
    # the oracle says 1 on x_a, x_b and the metamer: it "sees" both sources' predictions, whatever the labels
    assert out["n"] == 8 and out["oracle_says_b"] == 1.0 and out["oracle_says_a"] == 1.0
    f_a = net(images[:8]).argmax(1)
    clipped = net(inv.metamers(net, images[:8], images[8:]).clamp(0, 1)).argmax(1)
    keeps = (clipped == f_a).float().mean().item()
    assert out["inn_keeps"] == pytest.approx(keeps) and out["success"] == pytest.approx(keeps)
    assert out["independence"] == pytest.approx(keeps * 1.0)
    assert out["success_labels"] == pytest.approx((clipped == 0).float().mean().item())
    blend_f = net(0.5 * (images[:8] + images[8:])).argmax(1)
    assert out["blend_success"] == pytest.approx((blend_f == f_a).float().mean().item())
    assert out["blend_swapped"] == pytest.approx((blend_f == net(images[8:]).argmax(1)).float().mean().item())
    # restricted to the metamers that keep F's decision: this oracle always sees both sources
    assert out["n_kept"] == round(keeps * 8)
    if out["n_kept"]:
        assert out["sees_b_given_kept"] == 1.0 and out["sees_a_given_kept"] == 1.0
    if out["n_kept"] < 8:
        assert out["sees_b_given_lost"] == 1.0
    assert out["n_blend_kept"] == int((blend_f == f_a).sum())
    assert inv.metamer_statistic(out) == pytest.approx(out["sees_b_given_kept"] - out["blend_sees_b_given_kept"],
                                                       nan_ok=True)
    assert inv.metamer_null(out) == pytest.approx(out["blend_sees_a_given_swapped"]
                                                  - out["blend_sees_b_given_kept"], nan_ok=True)
    assert 0.0 <= out["in_range"] <= 1.0 and out["out_of_range"] >= 0.0 and out["logit_shift_median"] >= 0.0
    assert out["code_roundtrip_max"] < 1e-3 and out["recon_max"] < 1e-3


def test_claims_are_declared_with_seeds_as_replicates():
    assert set(inv.CLAIMS) == {"ce-label-in-zn", "ice-removes-label", "metamers", "ice-metamers-look", "ice-shift"}
    for key, claim in inv.CLAIMS.items():
        assert claim.key == key and claim.unit == "training seed" and claim.replicates == "seeds"
        assert claim.replicates in inv.SCHEMA
        planned = claim.planned(inv.PROFILES)
        assert planned["quick"] >= 2 and planned["long"] >= 2 and planned["full"] >= 2 and planned["tiny"] >= 1
    # the nuisance weight is chosen on a validation split in every profile, and every iCE claim says how
    assert not hasattr(inv, "WEIGHTS_CHOSEN_ON_TEST")
    for name, prof in inv.PROFILES.items():
        assert prof["nce_weight"] is None and len(prof["nce_grid"]) >= 2 and prof["authors"] is True, name
    for key in ("ice-removes-label", "ice-metamers-look", "ice-shift"):
        assert inv.WEIGHT_ON_VALIDATION in inv.CLAIMS[key].deviations
    for key in ("metamers", "ice-metamers-look"):
        assert inv.METAMERS_NOT_IN_IMAGE_SPACE in inv.CLAIMS[key].deviations


def test_claims_at_each_setting():
    for key in inv.CLAIMS:
        ours, authors = inv.claim_at(key, "ours"), inv.claim_at(key, "authors")
        assert ours.key == f"{key}@ours" and authors.key == f"{key}@authors"
        assert ours.statistic == authors.statistic == inv.CLAIMS[key].statistic
        assert ours.sesoi == authors.sesoi and ours.setting != authors.setting
        assert inv.AUTHORS_DEVIATIONS in authors.deviations
        assert inv.ARCHITECTURE not in authors.deviations and inv.WEIGHT_ON_VALIDATION not in authors.deviations
    assert inv.METAMERS_NOT_IN_IMAGE_SPACE in inv.claim_at("metamers", "authors").deviations
    assert "authors' setting" in inv.claim_at("ice-shift", "authors").comparator
    with pytest.raises(ValueError, match="setting"):
        inv.claim_at("metamers", "theirs")


def test_authors_setting_is_the_official_codes():
    a = inv.AUTHORS_SETTING
    assert a["coupling"] == "additive" and a["nce_mode"] == "shuffled" and a["nce_weight"] == 0.05
    assert a["optimizer"] == "adamax" and a["lr"] == 1e-3 and a["nce_warmup"] == 0.0
    # weight 1 on the NLL in bits per dimension is 1 / ln 2 on ours in nats per dimension
    assert a["mle_weight"] * math.log(2) == pytest.approx(1.0)
    cfg = inv.setting_cfg({"coupling": "allinone", "nce_weight": None, "lr": 2e-3}, "authors", 0.7)
    assert cfg["nce_weight"] == 0.05 and cfg["coupling"] == "additive"
    assert inv.setting_cfg({"nce_weight": None}, "ours", 0.7)["nce_weight"] == 0.7


@pytest.mark.parametrize("val_acc, ref, tol, expected", [
    ({0.25: 0.95, 1.0: 0.94, 4.0: 0.90}, 0.955, 0.02, (1.0, True)),   # 4.0 costs too much accuracy
    ({0.25: 0.95, 1.0: 0.94, 4.0: 0.95}, 0.955, 0.02, (4.0, True)),   # the largest that qualifies
    ({0.25: 0.80, 1.0: 0.70}, 0.955, 0.02, (0.25, False)),            # none qualifies: the smallest, flagged
    ({0.25: 0.93, 1.0: 0.935}, 0.955, 0.02, (1.0, True)),             # the boundary counts
])
def test_choose_nce_weight_rule(val_acc, ref, tol, expected):
    assert inv.choose_nce_weight(val_acc, ref, tol) == expected


def test_validation_split_holds_out_training_images_only():
    d = _toy_data(200)
    val = inv.validation_split(d, 0.25, seed=0)
    assert len(val.y_test) == 50 and len(val.y_train) == 150
    rows = lambda x: {tuple(r.tolist()) for r in x.flatten(1)}
    train_rows, val_rows, all_rows = rows(val.x_train), rows(val.x_test), rows(d.x_train)
    assert not (train_rows & val_rows) and (train_rows | val_rows) == all_rows
    counts = torch.bincount(val.y_test, minlength=4)
    assert counts.max() - counts.min() <= 1  # stratified
    again = inv.validation_split(d, 0.25, seed=0)
    assert torch.equal(again.x_test, val.x_test)
    assert not torch.equal(inv.validation_split(d, 0.25, seed=1).y_test, val.y_test)


def test_invertibility_gate():
    ok, why = inv.invertibility_gate({"recon_max": 8.5e-4, "code_roundtrip_max": 2.1e-3})
    assert ok and why == ""
    ok, why = inv.invertibility_gate({"recon_max": 0.76, "code_roundtrip_max": 39.4})  # plain CE, quick run
    assert not ok and "image" in why and "code" in why
    ok, why = inv.invertibility_gate({"recon_max": 1e-4, "code_roundtrip_max": float("nan")})
    assert not ok and "code" in why


@pytest.mark.parametrize("key, null", [
    # raw pixels against the untrained INN's z_n: two label-agnostic representations, a point apart either way
    ("ce-label-in-zn", [0.004, -0.006, 0.002]),
    ("ce-label-in-zn", [0.012, -0.004, 0.003]),
    # the blend with a and b swapped against the blend: symmetric, a few pairs apart
    ("metamers", [0.01, -0.02, 0.005]),
    ("metamers", [0.03, 0.01, -0.01]),
])
def test_null_baselines_are_not_graded_as_reproductions(key, null):
    from advbook.protocol import grade

    assert inv.CLAIMS[key].null
    assert grade(inv.CLAIMS[key], null).verdict not in ("reproduced", "partly reproduced")


def test_null_of_the_metamer_claim_from_the_module_statistic(images):
    """A 'metamer' that is the blend itself: the metamer statistic is 0, and the swapped-blend null is graded
    neither reproduced nor partly reproduced over three seeds of a random net."""
    from advbook.protocol import grade

    nulls = []
    for seed in range(3):
        net = randomise(tiny_net(seed=seed), 0.2)
        net.initialize(images)
        y = torch.zeros(8, dtype=torch.long)
        out = inv.metamer_attack(net, randomise(tiny_net(seed=seed + 10), 0.2), images[:8], y, images[8:], y + 1)
        nulls.append(inv.metamer_null(out))
        same = {**out, "sees_b_given_kept": out["blend_sees_b_given_kept"]}
        assert inv.metamer_statistic(same) == 0.0 or math.isnan(out["blend_sees_b_given_kept"])
    assert grade(inv.CLAIMS["metamers"], nulls).verdict not in ("reproduced", "partly reproduced")


def test_standardize_floors_the_scale_of_constant_features():
    f_train = torch.zeros(100, 3)
    f_train[:, 1] = torch.linspace(0, 1, 100)
    f_train[:, 2] = torch.linspace(-2, 2, 100)
    f_test = torch.ones(4, 3)  # ink where every training image was blank (feature 0)
    tr, te = inv.standardize(f_train, f_test)
    assert torch.isfinite(te).all() and te.abs().max().item() < 100
    assert tr[:, 0].abs().max().item() == 0.0
    assert tr[:, 2].std().item() == pytest.approx(1.0, rel=1e-4)


def test_ice_loss_sign_and_cap():
    y = torch.tensor([0, 1, 2, 3])
    logits = torch.zeros(4, 10)
    good_nc = torch.nn.functional.one_hot(y, 10).float() * 10  # nuisance classifier that knows y
    bad_nc = -good_nc  # confidently wrong: its CE exceeds log C and is capped
    nll = torch.tensor(1.0)
    loss_good, parts_good = inv.ice_encoder_loss(logits, good_nc, y, nll)
    loss_bad, parts_bad = inv.ice_encoder_loss(logits, bad_nc, y, nll)
    assert loss_bad < loss_good  # the encoder prefers a nuisance that hides y
    assert parts_bad["nce"] == pytest.approx(math.log(10))
    assert parts_good["ce"] == pytest.approx(math.log(10))
    # the authors' variant: CE against shuffled labels, smallest for a nuisance classifier that predicts the prior
    flat_nc = torch.zeros(4, 10)
    g = torch.Generator().manual_seed(0)
    loss_flat, _ = inv.ice_encoder_loss(logits, flat_nc, y, nll, nce_mode="shuffled", generator=g)
    loss_sure, _ = inv.ice_encoder_loss(logits, good_nc, y, nll, nce_mode="shuffled", generator=g)
    assert loss_flat == pytest.approx(2 * math.log(10) + 1.0)
    assert loss_sure > loss_flat
    with pytest.raises(ValueError, match="nce_mode"):
        inv.ice_encoder_loss(logits, good_nc, y, nll, nce_mode="reverse")

def test_nuisance_nll_is_gaussian_negative_loglik():
    z_n = torch.zeros(3, 5)
    logdet = torch.full((3,), 2.0)
    expected = (0.5 * 5 * math.log(2 * math.pi) - 2.0) / 8
    assert inv.nuisance_nll(z_n, logdet, 8).item() == pytest.approx(expected)


def _toy_data(n=256, seed=0):
    """Random 8x8 images whose label is written into their brightness (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.5 * torch.rand(n, 1, 8, 8, generator=g) + 0.1 * y[:, None, None, None].float()
    return TensorData("toy", x, y, x[:64], y[:64], classes=("a", "b", "c", "d"))


@pytest.mark.parametrize("objective, coupling, optimizer", [(o, "allinone", "adam") for o in inv.OBJECTIVES]
                         + [("ice", "additive", "adamax"), ("ce_mle", "additive", "adamax")])
def test_training_runs_deterministically_and_learns(objective, coupling, optimizer):
    d = _toy_data()

    def run():
        net = tiny_net(classes=4, coupling=coupling)
        hist = inv.train_inn(net, d.x_train, d.y_train, objective=objective, epochs=3, batch_size=32, lr=3e-3,
                             nc_steps=1, nc_hidden=16, generator=torch.Generator().manual_seed(0),
                             optimizer=optimizer, nce_mode="shuffled" if optimizer == "adamax" else "capped")
        return net, hist

    net, hist = run()
    _, hist2 = run()
    assert hist[-1]["loss"] == hist2[-1]["loss"]  # same seed on CPU => same numbers
    assert hist[-1]["ce"] < hist[0]["ce"]
    assert all(math.isfinite(r["loss"]) for r in hist)
    assert inv.reconstruction_error(net, d.x_test).max().item() < 1e-3
    if objective == "ice":
        assert "nc_train_acc" in hist[-1]


def test_ice_logs_the_online_nuisance_classifiers_test_accuracy():
    d = _toy_data()
    net = tiny_net(classes=4, logit_bn=True)
    hist = inv.train_inn(net, d.x_train, d.y_train, objective="ice", epochs=1, batch_size=32, nc_steps=1,
                         nc_hidden=16, nce_mode="shuffled", x_test=d.x_test, y_test=d.y_test,
                         generator=torch.Generator().manual_seed(0))
    assert 0.0 <= hist[-1]["nc_test_acc"] <= 1.0
    with pytest.raises(ValueError, match="objective"):
        inv.train_inn(net, d.x_train, d.y_train, objective="mle")
    with pytest.raises(ValueError, match="optimizer"):
        inv.train_inn(net, d.x_train, d.y_train, objective="ce", optimizer="sgd")


def test_nuisance_probe_reads_label_from_informative_nuisance():
    """With an identity-like net the nuisance holds the image, so a probe must beat chance on easy data."""
    d = _toy_data(512)
    net = tiny_net(classes=4)
    net.initialize(d.x_train)
    out = inv.nuisance_probe(net, d, hidden=32, epochs=10, batch_size=64, lr=3e-3, cached=False)
    assert out["test_acc"] > 0.6
    # raw pixels hold the label too; a feature with no information gives chance
    raw = inv.feature_probe(d.x_train.flatten(1), d.y_train, d.x_test.flatten(1), d.y_test, 4, hidden=32,
                            epochs=10, batch_size=64, lr=3e-3, cached=False)
    assert raw["test_acc"] > 0.6 and raw["n_test"] == 64
    noise = torch.randn(len(d.y_train), 8, generator=torch.Generator().manual_seed(1))
    blind = inv.feature_probe(noise, d.y_train, noise[:64], d.y_test, 4, hidden=32, epochs=10, batch_size=64,
                              lr=3e-3, cached=False)
    assert blind["test_acc"] < 0.6


def test_add_class_patch_codes_label():
    x = torch.zeros(5, 1, 28, 28)
    code = torch.tensor([0, 3, 9, 3, 5])
    out = inv.add_class_patch(x, code, 10)
    assert out.sum().item() == 5 * 4
    cols = out[:, 0, 0].argmax(1)
    assert torch.equal(cols, 4 + 2 * code)
    assert torch.equal(out[1], out[3])
    assert torch.equal(x, torch.zeros_like(x))  # input untouched
    rgb = inv.add_class_patch(torch.zeros(2, 3, 32, 32), torch.tensor([0, 9]), 10)
    assert rgb[:, :, :2].sum().item() == 2 * 3 * 4


def test_pair_indices_have_different_labels():
    y = torch.randint(0, 10, (200,), generator=torch.Generator().manual_seed(0))
    a, b = inv.pair_indices(y, 50, torch.Generator().manual_seed(1))
    assert len(a) == 50 and bool((y[a] != y[b]).all())


def test_schema_rejects_bad_values():
    with pytest.raises(params.ParameterError, match="epochs"):
        params.resolve({"profile": "tiny", "epochs": -3}, inv.PROFILES, inv.SCHEMA)
    with pytest.raises(params.ParameterError, match="coupling"):
        params.resolve({"profile": "tiny", "coupling": "nice"}, inv.PROFILES, inv.SCHEMA)
    for name in ("quick", "long", "full", "tiny"):
        cfg = params.resolve({"profile": name}, inv.PROFILES, inv.SCHEMA)
        assert cfg.levels >= 1
        inv.check(cfg)


@pytest.mark.parametrize("given, fragment", [
    ({"dataset": "mnist", "levels": 3}, "levels"),
    ({"n_train": 32, "batch_size": 64}, "batch_size"),
    ({"nce_weight": 0.0, "nce_warmup": 0.5}, "nce_warmup"),
    ({"n_train": 80, "batch_size": 64, "val_frac": 0.25}, "val_frac"),
])
def test_check_rejects_inconsistent_parameters(given, fragment):
    cfg = params.resolve({"profile": "tiny", **given}, inv.PROFILES, inv.SCHEMA)
    with pytest.raises(params.ParameterError, match=fragment):
        inv.check(cfg)
