"""The method registry: adding a method is one module plus one registry line. Here a toy method, registered
from this file alone, is validated by ``make_config`` and trains through the one loop; a second one brings an
option of its own, which the config, the command line, sweeps and validation find through the registry alone;
the registry checks a method's learner through the learners' properties, not their names."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psjax import cli, registry, schema
from psjax.config import ConfigError, make_config
from psjax.fields import doc_field
from psjax.registry import Method
from psjax.sharing.bank import SharingState, SlotLayout
from psjax.sharing.methods import Scheme, static_update
from psjax.train import init_runner, make_parts, make_train


def make_alternate(cfg, spec, hidden, num_masked_layers, bank_names):
    """Agents 0, 2, 4, ... share slot 0 and agents 1, 3, ... slot 1: a layout no built-in method has."""
    del cfg, hidden, num_masked_layers, bank_names
    slots = jnp.arange(spec.num_agents, dtype=jnp.int32) % 2
    return Scheme(SlotLayout(2, "indexed", False), lambda key: SharingState(slots, ()), static_update)


@pytest.fixture
def alternate():
    registry.register(Method("toy_alternate", "every other agent shares a network", make_alternate,
                             default_learner="a2c", needs=("policy",)))
    yield "toy_alternate"
    registry.unregister("toy_alternate")


def test_toy_method_from_this_file_trains(alternate):
    cfg = make_config({"alg": alternate, "env": "mpe_spread", "steps": 400, "seeds": 1})
    assert cfg.learner_name == "a2c"  # the record's default learner
    parts = make_parts(cfg)
    before = init_runner(parts, jax.random.PRNGKey(0)).learner.params["actor"]
    runner, metrics = jax.jit(make_train(cfg))(jax.random.PRNGKey(0))
    after = runner.learner.params["actor"]
    assert np.asarray(runner.sharing.slots).tolist() == [0, 1, 0]
    kernel = lambda p: np.asarray(jax.tree.leaves(p)[0])  # noqa: E731
    assert kernel(after).shape[0] == 2  # two rows in the bank, one per slot
    changed = np.abs(kernel(after) - kernel(before)).reshape(2, -1).max(1)
    assert (changed > 0).all()  # both slots were trained
    assert np.isfinite(np.asarray(metrics["loss"])).all() and len(metrics["loss"]) == cfg.num_iterations


@dataclass(frozen=True)
class EveryKthOptions:
    toy_period: int = doc_field(2, "toy_every_kth: agents i and j share a network when i = j mod this", min=1)


def make_every_kth(cfg, spec, hidden, num_masked_layers, bank_names):
    """Agent i on slot i mod ``sharing.toy_period``: the method reads its own option like any other field."""
    del hidden, num_masked_layers, bank_names
    period = cfg.sharing.toy_period
    slots = jnp.arange(spec.num_agents, dtype=jnp.int32) % period
    return Scheme(SlotLayout(period, "indexed", False), lambda key: SharingState(slots, ()), static_update)


@pytest.fixture
def every_kth():
    registry.register(Method("toy_every_kth", "agents share by index modulo toy_period", make_every_kth,
                             default_learner="a2c", needs=("policy",), options=EveryKthOptions))
    yield "toy_every_kth"
    registry.unregister("toy_every_kth")


def test_toy_method_with_its_own_option(every_kth, capsys):
    cfg = make_config({"alg": every_kth, "env": "mpe_spread", "num_agents": 4, "toy_period": 3, "steps": 400})
    assert cfg.sharing.toy_period == 3 and make_config({"alg": every_kth}).sharing.toy_period == 2  # its default
    runner, metrics = jax.jit(make_train(cfg))(jax.random.PRNGKey(0))
    assert np.asarray(runner.sharing.slots).tolist() == [0, 1, 2, 0]
    assert jax.tree.leaves(runner.learner.params["actor"])[0].shape[0] == 3  # one bank row per slot
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    # its field's rule, its dotted key and sweeps come from the registered options
    with pytest.raises(ConfigError, match=r"sharing.toy_period=0 is below the minimum 1"):
        make_config({"alg": every_kth, "sharing.toy_period": 0})
    swept = make_config({"alg": every_kth, "sweep.sharing.toy_period": "2,3"})
    assert swept.sweep == "sharing.toy_period=2,3"
    assert cli.main(["fields"]) == 0
    assert "sharing.toy_period = 2" in capsys.readouterr().out
    assert cli.main(["train", "toy_period=x"]) == 2  # checked by the command line, naming the field
    assert "toy_period='x' is not a valid int" in capsys.readouterr().err


def test_options_leave_with_their_method_and_cannot_clash():
    @dataclass(frozen=True)
    class Clashing:
        bdps_roles: int = doc_field(3, "a second field of BDPS's name")

    with pytest.raises(ConfigError, match="field 'bdps_roles' is already BDPSOptions's"):
        schema.add_options(Clashing)
    registry.register(Method("toy_every_kth", "", make_every_kth, default_learner="a2c", options=EveryKthOptions))
    assert schema.resolve_key("toy_period", "a2c") == "sharing.toy_period"
    registry.unregister("toy_every_kth")
    with pytest.raises(ConfigError, match="unknown config field 'toy_period'"):
        schema.resolve_key("toy_period", "a2c")
    assert "toy_period" not in schema.to_dict(make_config({}))["sharing"]
    # the built-in methods' options are theirs, SharingConfig keeps what every method shares
    assert not any(name.startswith(("bdps_", "pps_", "kal_", "madps_", "identity_")) for name in
                   schema.SharingConfig.__dataclass_fields__)


def test_toy_method_learner_checked_by_property(alternate):
    with pytest.raises(ConfigError, match=r"alg=toy_alternate needs a policy network .*learner='qmix' is not "
                                          r"allowed; allowed: a2c, ppo"):
        make_config({"alg": alternate, "learner": "qmix"})
    assert make_config({"alg": alternate, "learner": "ppo"}).learner_name == "ppo"


def test_unknown_method_names_the_registered_ones(alternate):
    with pytest.raises(ConfigError, match=r"unknown method alg='nope'; allowed: nops, fups, .*toy_alternate"):
        make_config({"alg": "nope"})


def test_record_rules():
    with pytest.raises(ConfigError, match="default_learner='sarsa'"):
        registry.register(Method("bad", "", make_alternate, default_learner="sarsa"))
    with pytest.raises(ConfigError, match=r"needs=\['mixer'\] are not learner properties"):
        registry.register(Method("bad", "", make_alternate, needs=("mixer",)))
    assert "bad" not in registry.names()
    # the built-in methods' learners follow from what they need
    assert registry.allowed_learners(registry.get("pps_a")) == ("qmix", "vdn", "iql", "pqn")
    assert registry.allowed_learners(registry.get("bdps")) == ("qmix", "vdn", "pqn")
    assert registry.allowed_learners(registry.get("madps")) == ("a2c", "ppo")
    assert registry.allowed_learners(registry.get("fups")) == ("qmix", "vdn", "iql", "pqn", "a2c", "ppo")


def test_methods_command_lists_every_registered_method(alternate, capsys):
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out.splitlines()
    for name in registry.names():
        method = registry.get(name)
        line = next(line for line in out if line.split()[0] == name)
        assert f"{method.default_learner} ({', '.join(registry.allowed_learners(method))})" in line
        assert method.doc in line
    assert "agent_id=auto gives onehot" in next(line for line in out if line.startswith("fups_id "))
