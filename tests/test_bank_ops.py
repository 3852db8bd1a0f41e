"""Bank row operations: params, target and Adam moments change together; other keys never."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from psjax.learners.qmix import QState
from psjax.sharing.bank_ops import copy_row, map_banks, run_if, weighted_mean_rows


def _state():
    params = {"agent": {"w": jnp.arange(6.0).reshape(3, 2)}, "mixer": {"b": jnp.ones(2)}}
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    grads = jax.tree.map(lambda p: p + 1.0, params)
    opt_state = opt.update(grads, opt.init(params), params)[1]
    return QState(params, jax.tree.map(lambda p: -p, params), opt_state, None, jnp.int32(0))


def test_weighted_mean_rows_by_hand():
    x = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    out = weighted_mean_rows(x, jnp.array([0.5, 0.25, 0.25]))
    np.testing.assert_allclose(out, [[2.5, 3.5]] * 3)
    np.testing.assert_allclose(copy_row(x, 2), [[5.0, 6.0]] * 3)


def test_map_banks_touches_banks_in_params_target_and_moments_only():
    state = _state()
    new = map_banks(state, ("agent",), lambda path, x: copy_row(x, 0))
    np.testing.assert_allclose(new.params["agent"]["w"], [[0.0, 1.0]] * 3)
    np.testing.assert_allclose(new.target["agent"]["w"], [[-0.0, -1.0]] * 3)
    mu = new.opt_state[1][0].mu["agent"]["w"]
    np.testing.assert_allclose(mu, jnp.broadcast_to(state.opt_state[1][0].mu["agent"]["w"][0], (3, 2)))
    np.testing.assert_allclose(new.params["mixer"]["b"], state.params["mixer"]["b"])
    assert int(new.opt_state[1][0].count) == int(state.opt_state[1][0].count)


def test_map_banks_can_leave_target_and_moments():
    state = _state()
    new = map_banks(state, ("agent",), lambda path, x: x * 0.0, target=False, moments=False)
    assert float(jnp.abs(new.params["agent"]["w"]).sum()) == 0.0
    np.testing.assert_allclose(new.target["agent"]["w"], state.target["agent"]["w"])
    np.testing.assert_allclose(new.opt_state[1][0].mu["agent"]["w"], state.opt_state[1][0].mu["agent"]["w"])


def test_map_banks_passes_layer_paths():
    state = _state()
    seen = []
    map_banks(state, ("agent",), lambda path, x: seen.append(path) or x, target=False, moments=False)
    assert seen == [("w",)]


def test_run_if_runs_only_where_needed_under_vmap():
    def fn(x, key):
        return x + 1.0 + 0.0 * jax.random.uniform(key)

    out = jax.jit(jax.vmap(lambda p, x, k: run_if(p, fn, x, k)))(
        jnp.array([True, False, True]), jnp.zeros(3), jax.random.split(jax.random.PRNGKey(0), 3))
    np.testing.assert_array_equal(out, [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(run_if(jnp.bool_(False), fn, jnp.zeros(2), jax.random.PRNGKey(0)), 0.0)
