"""Banks, slots and masks: gather-apply equals a loop over agents; masks cut gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psjax.config import make_config
from psjax.envs.base import EnvSpec
from psjax.nets.agents import MLP, RecurrentNet, block_params
from psjax.sharing.bank import SharingState, SlotLayout, apply_agents, init_bank, unroll_agents
from psjax.sharing.methods import make_scheme

N, D, H, A, K = 4, 5, 8, 3, 3


def _bank(net, num_slots, *example):
    return init_bank(lambda k: net.init(k, *example), jax.random.PRNGKey(1), num_slots)


def test_indexed_apply_equals_loop_over_agents():
    net = MLP(H, A)
    bank = _bank(net, K, jnp.zeros(D))
    slots = jnp.array([2, 0, 2, 1])
    masks = tuple(
        jax.random.bernoulli(jax.random.PRNGKey(i), 0.5, (N, H)).astype(jnp.float32) for i in range(2)
    )
    x = jax.random.normal(jax.random.PRNGKey(2), (7, N, D))
    out = apply_agents(net.apply, bank, SlotLayout(K, "indexed", True), SharingState(slots, masks), x)
    for i in range(N):
        params_i = jax.tree.map(lambda p, slot=slots[i]: p[slot], bank)
        expected = net.apply(params_i, x[:, i], (masks[0][i], masks[1][i]))
        np.testing.assert_allclose(out[:, i], expected, rtol=1e-5, atol=1e-6)


def test_identity_layout_equals_indexed_with_arange():
    net = RecurrentNet(H, A)
    bank = _bank(net, N, jnp.zeros(H), jnp.zeros(D))
    h = jax.random.normal(jax.random.PRNGKey(3), (2, N, H))
    x = jax.random.normal(jax.random.PRNGKey(4), (2, N, D))
    state = SharingState(jnp.arange(N), ())
    a = apply_agents(net.apply, bank, SlotLayout(N, "identity", False), state, h, x)
    b = apply_agents(net.apply, bank, SlotLayout(N, "indexed", False), state, h, x)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6), a, b)


def test_shared_bank_apply_equals_plain_shared_network():
    net = MLP(H, A)
    bank = _bank(net, 1, jnp.zeros(D))
    x = jax.random.normal(jax.random.PRNGKey(5), (3, N, D))
    out = apply_agents(
        net.apply, bank, SlotLayout(1, "shared", False), SharingState(jnp.zeros(N, int), ()), x
    )
    plain = net.apply(jax.tree.map(lambda p: p[0], bank), x)
    np.testing.assert_array_equal(out, plain)


@pytest.mark.parametrize("mode,num_slots,masked,depth", [("shared", 1, True, 2), ("identity", N, False, 2),
                                                         ("indexed", K, True, 3)])
def test_unroll_agents_equals_stepping_the_network(mode, num_slots, masked, depth):
    """The batched unroll (dense layers over all steps at once, only the GRU scanned) equals T steps of the
    whole network with the state zeroed at each reset: states and outputs, every layout, masks through the GRU
    (a depth-3 net keeps its last hidden layer unmasked)."""
    T, B = 6, 2
    net = RecurrentNet(H, A, depth=depth)
    bank = _bank(net, num_slots, jnp.zeros(H), jnp.zeros(D))
    slots = jnp.arange(N) if mode == "identity" else jnp.array([2, 0, 2, 1]) if mode == "indexed" else jnp.zeros(N, int)
    masks = tuple(jax.random.bernoulli(jax.random.PRNGKey(10 + i), 0.6, (N, H)).astype(jnp.float32)
                  for i in range(2)) if masked else ()
    layout, state = SlotLayout(num_slots, mode, masked), SharingState(slots, masks)
    h0 = jax.random.normal(jax.random.PRNGKey(6), (B, N, H))
    x = jax.random.normal(jax.random.PRNGKey(7), (T, B, N, D))
    resets = jnp.zeros((T, B), bool).at[3, 0].set(True).at[1, 1].set(True)
    h_all, out = unroll_agents(net, bank, layout, state, h0, x, resets)
    assert h_all.shape == (T, B, N, H) and out.shape == (T, B, N, A)
    h = h0
    for t in range(T):
        h = jnp.where(resets[t][:, None, None], 0.0, h)
        h, o = apply_agents(net.apply, bank, layout, state, h, x[t])
        np.testing.assert_allclose(h_all[t], h, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[t], o, rtol=1e-5, atol=1e-6)


def test_shared_layout_has_no_gather():
    """FuPS must not pay for the gather: the compiled apply contains no gather op."""
    net = MLP(H, A)
    bank = _bank(net, 1, jnp.zeros(D))
    state = SharingState(jnp.zeros(N, jnp.int32), ())
    x = jnp.ones((3, N, D))
    fn = jax.jit(lambda b, s, x: apply_agents(net.apply, b, SlotLayout(1, "shared", False), s, x))
    hlo = fn.lower(bank, state, x).as_text()
    assert "gather" not in hlo
    indexed = jax.jit(lambda b, s, x: apply_agents(net.apply, b, SlotLayout(1, "indexed", False), s, x))
    assert "gather" in indexed.lower(bank, state, x).as_text()


@pytest.mark.parametrize("recurrent", [False, True])
def test_masked_units_get_exactly_zero_gradient(recurrent):
    net = RecurrentNet(H, A) if recurrent else MLP(H, A)
    example = (jnp.zeros(H), jnp.zeros(D)) if recurrent else (jnp.zeros(D),)
    bank = _bank(net, 1, *example)
    # every agent masks out units 0 and 1 of both layers
    mask = jnp.ones((N, H)).at[:, :2].set(0.0)
    state = SharingState(jnp.zeros(N, jnp.int32), (mask, mask))
    layout = SlotLayout(1, "shared", True)
    x = jax.random.normal(jax.random.PRNGKey(6), (5, N, D))

    def loss(b):
        if recurrent:
            h = jnp.zeros((5, N, H))
            for _ in range(3):  # several steps: masked GRU units must stay silent through time
                h, q = apply_agents(net.apply, b, layout, state, h, x)
            return jnp.sum(q**2)
        return jnp.sum(apply_agents(net.apply, b, layout, state, x) ** 2)

    grads = jax.grad(loss)(bank)["params"]
    first = block_params(grads, "hidden_0")["kernel"][0]
    assert np.all(np.asarray(first[:, :2]) == 0.0) and np.any(np.asarray(first[:, 2:]) != 0.0)
    assert np.all(np.asarray(block_params(grads, "hidden_0")["bias"][0][:2]) == 0.0)
    last = block_params(grads, "head" if recurrent else "hidden_1")["kernel"][0]  # reads the second masked layer
    assert np.all(np.asarray(last[:2]) == 0.0) and np.any(np.asarray(last[2:]) != 0.0)
    if recurrent:
        gru = block_params(grads, "gru")
        for gate in ("ir", "iz", "in"):  # inputs from masked dense units, into masked GRU units
            k = np.asarray(gru[gate]["kernel"][0])
            assert np.all(k[:2, :] == 0.0) and np.all(k[:, :2] == 0.0)
        for gate in ("hr", "hz", "hn"):
            k = np.asarray(gru[gate]["kernel"][0])
            assert np.all(k[:2, :] == 0.0) and np.all(k[:, :2] == 0.0)


def _spec(n):
    return EnvSpec("test", n, 4, 3, 2, 10, (0,) * n, "mean", False)


def test_method_layouts_and_snp_masks():
    n = 5
    nops = make_scheme(make_config({"alg": "nops"}), _spec(n), H, 2)
    assert nops.layout == SlotLayout(n, "identity", False)
    np.testing.assert_array_equal(nops.init(jax.random.PRNGKey(0)).slots, np.arange(n))
    for alg in ("fups", "fups_id"):
        assert make_scheme(make_config({"alg": alg}), _spec(n), H, 2).layout == SlotLayout(1, "shared", False)
    snp = make_scheme(make_config({"alg": "snp_ps", "snp_keep_prob": 0.5}), _spec(n), 256, 2)
    masks = snp.init(jax.random.PRNGKey(0)).masks
    assert len(masks) == 2 and masks[0].shape == (n, 256)
    assert set(np.unique(np.asarray(masks[0]))) <= {0.0, 1.0}
    assert 0.4 < float(masks[0].mean()) < 0.6  # keep-rate p
    assert not np.array_equal(masks[0][0], masks[0][1])  # per-agent
    other = snp.init(jax.random.PRNGKey(1)).masks
    assert not np.array_equal(masks[0], other[0])


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4), (2, 3, 6)])
def test_orthogonal_init_without_lapack(shape):
    from psjax.nets.init import orthogonal

    w = orthogonal(2.0)(jax.random.PRNGKey(0), shape)
    m = np.asarray(w).reshape(-1, shape[-1]) / 2.0
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    np.testing.assert_allclose(gram, np.eye(gram.shape[0]), atol=1e-5)
    assert not np.allclose(w, orthogonal(2.0)(jax.random.PRNGKey(1), shape))


def test_blocks_name_every_layer_of_every_agent_network():
    from psjax.nets.agents import blocks, blocks_before_gru, module_of

    def init(net, *args):
        return jax.eval_shape(net.init, jax.random.PRNGKey(0), *args)

    image = (3, 3, 1)
    recurrent = init(RecurrentNet(8, 3, obs_shape=image, layer_norm=True), jnp.zeros(8), jnp.zeros(9 + 2))
    assert blocks(recurrent) == {"ConvTorso_0": "conv", "Dense_0": "hidden_0", "Dense_0_norm": "hidden_0_norm",
                                 "GRUCell_0": "gru", "Dense_1": "head"}
    assert blocks(init(MLP(8, 3), jnp.zeros(5))) == {"Dense_0": "hidden_0", "Dense_1": "hidden_1", "Dense_2": "head"}
    assert blocks(init(MLP(8, 1, depth=1), jnp.zeros(5))["params"]) == {"Dense_0": "hidden_0", "Dense_1": "head"}
    named = init(MLP(8, 3, names=("conv", "front_0", "front_1", "out")), jnp.zeros(5))
    assert blocks(named) == {"front_0": "front_0", "front_1": "front_1", "out": "out"}  # explicit names: their own
    assert blocks_before_gru() == {"conv", "hidden_0", "hidden_0_norm"}
    assert module_of(recurrent, "head") == "Dense_1"
    with pytest.raises(KeyError, match="no block 'gru'; this network has"):
        module_of(init(MLP(8, 3), jnp.zeros(5)), "gru")
