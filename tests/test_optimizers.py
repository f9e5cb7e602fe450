import argparse

import numpy as np
import pytest

from deepconvnet.cli.train import add_train_options
from deepconvnet.errors import DeepConvNetError
from deepconvnet.optimizers import OPTIMIZERS, build_optimizer

P0 = np.array([1.0, -2.0])
G1 = np.array([0.5, -0.25])
G2 = np.array([-0.1, 0.3])
LR = 0.1


def book_updates(name):
    """The book's common/optimizer.py rules (and the Adam paper's), written out for two steps."""
    p, out = P0.copy(), []
    v = np.zeros(2)
    m = np.zeros(2)
    for t, g in enumerate((G1, G2), start=1):
        if name == "sgd":
            p = p - LR * g
        elif name == "momentum":
            v = 0.9 * v - LR * g
            p = p + v
        elif name == "nesterov":
            v = 0.9 * v - LR * g
            p = p + 0.81 * v - 1.9 * LR * g
        elif name == "adagrad":
            v = v + g * g
            p = p - LR * g / (np.sqrt(v) + 1e-7)
        elif name == "rmsprop":
            v = 0.99 * v + 0.01 * g * g
            p = p - LR * g / (np.sqrt(v) + 1e-7)
        elif name == "adam":
            lr_t = LR * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
            m = m + 0.1 * (g - m)
            v = v + 0.001 * (g * g - v)
            p = p - lr_t * m / (np.sqrt(v) + 1e-7)
        elif name == "adam-paper":  # Kingma & Ba, Algorithm 1
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            m_hat, v_hat = m / (1 - 0.9**t), v / (1 - 0.999**t)
            p = p - LR * m_hat / (np.sqrt(v_hat) + 1e-7)
        out.append(p.copy())
    return out


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_two_steps_match_the_book(name):
    p = P0.copy()
    opt = build_optimizer(name, lr=LR)
    expected = book_updates(name)
    opt.step({"p": p}, {"p": G1})
    np.testing.assert_allclose(p, expected[0], rtol=1e-13, atol=1e-14)
    opt.step({"p": p}, {"p": G2})
    np.testing.assert_allclose(p, expected[1], rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_round_trip_continues_identically(rng, name):
    params = {"w": rng.standard_normal((3, 2)).astype(np.float32)}
    grads = [{"w": rng.standard_normal((3, 2)).astype(np.float32)} for _ in range(4)]
    a = build_optimizer(name, lr=0.05, weight_decay=0.01)
    a.step(params, grads[0])
    b = build_optimizer(name, lr=0.5)
    for hyperparameter in b.hyperparameters:  # the state must carry them, not the defaults
        setattr(b, hyperparameter, 0.5)
    b.load_state_dict(a.state_dict())
    assert [getattr(b, h) for h in b.hyperparameters] == [getattr(a, h) for h in a.hyperparameters]
    pa, pb = {"w": params["w"].copy()}, {"w": params["w"].copy()}
    for g in grads[1:]:
        a.step(pa, g)
        b.step(pb, g)
    assert np.array_equal(pa["w"], pb["w"])
    assert pa["w"].dtype == np.float32


@pytest.mark.parametrize("name", sorted(n for n in OPTIMIZERS if n != "sgd"))
@pytest.mark.parametrize("other", [np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float64)])
def test_state_that_does_not_fit_its_parameter_is_an_error_not_a_reset(name, other):
    params = {"w": np.ones((3, 2), np.float32)}
    a = build_optimizer(name, lr=0.1)
    a.step(params, {"w": np.ones((3, 2), np.float32)})
    state = a.state_dict()
    slots = [k for k in state if k.endswith(".w")]
    state[slots[0]] = other
    b = build_optimizer(name, lr=0.1)
    b.load_state_dict(state)
    before = params["w"].copy()
    with pytest.raises(DeepConvNetError, match=f"optimizer state {slots[0]} is"):
        b.step(params, {"w": np.ones((3, 2), np.float32)})
    assert np.array_equal(params["w"], before)


def test_updates_in_place_and_weight_decay_only_on_weights():
    W, b = np.ones((2, 2)), np.ones(2)
    ref = W
    build_optimizer("sgd", lr=0.1, weight_decay=0.5).step(
        {"W": W, "b": b}, {"W": W * 0, "b": b * 0}
    )
    assert W is ref
    np.testing.assert_array_equal(W, np.full((2, 2), 0.95))
    np.testing.assert_array_equal(b, np.ones(2))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_weight_decay_is_the_l2_gradient_added_to_weights_only(rng, name):
    """weight_decay=L steps as the gradient g + L * W would (the book's L2 term, lambda * W),
    for every optimizer; biases (1-D) take g alone."""
    W, b = rng.standard_normal((3, 2)), rng.standard_normal(2)
    grads = [{"W": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)} for _ in range(3)]
    decayed = {"W": W.copy(), "b": b.copy()}
    by_hand = {"W": W.copy(), "b": b.copy()}
    with_decay, without = build_optimizer(name, lr=LR, weight_decay=0.3), build_optimizer(name, LR)
    for g in grads:
        with_decay.step(decayed, g)
        without.step(by_hand, {"W": g["W"] + 0.3 * by_hand["W"], "b": g["b"]})
    np.testing.assert_allclose(decayed["W"], by_hand["W"], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(decayed["b"], by_hand["b"], rtol=1e-13, atol=1e-15)
    assert not np.allclose(decayed["W"], W)


def test_lr_settable_and_unknown_name():
    opt = build_optimizer("sgd", lr=1.0)
    p = np.zeros(1)
    opt.lr = 0.5
    opt.step({"p": p}, {"p": np.ones(1)})
    assert p[0] == -0.5
    from deepconvnet.errors import DeepConvNetError

    with pytest.raises(DeepConvNetError):
        build_optimizer("lbfgs")


def test_train_command_offers_every_optimizer():
    """The CLI lists names without importing the engine; they must not drift from OPTIMIZERS."""
    parser = argparse.ArgumentParser()
    add_train_options(parser)
    choices = next(a.choices for a in parser._actions if a.dest == "optimizer")
    assert sorted(choices) == sorted(OPTIMIZERS)
