"""The method registry: one ``Method`` record per parameter-sharing method, defined in that method's own
module (its ``METHODS`` tuple). Nothing outside a method's module names the method: the config validates
``alg`` against the registry, the loop builds whatever scheme and agent model the record gives, the runner
draws the record's pictures.

Adding a method is one new module defining its ``METHODS`` plus its entry in ``psjax.catalog.MODULES``
(which registers the built-in records in table order); outside psjax, ``register(Method(...))`` before
``make_config`` does the same.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from psjax.fields import ConfigError
from psjax.schema import LEARNER_KINDS, TrainConfig, add_options, coerce, remove_options, resolve_key

# what each learner property means, for the error that names a method's unmet requirement
TRAITS = {
    "value_based": "per-agent recurrent Q networks (QMIX / VDN / IQL)",
    "team_value": "a team value to mix (QMIX, VDN)",
    "recurrent": "recurrent agent networks",
    "policy": "a policy network and a critic (A2C / PPO)",
}


@dataclass(frozen=True)
class Method:
    """What a parameter-sharing method is, as data."""

    name: str  # the ``alg`` value
    doc: str  # one line: what it shares and how (README's table, ``python -m psjax methods``)
    # build_scheme(cfg, spec, hidden, num_masked_layers, bank_names) -> psjax.sharing.methods.Scheme:
    # the slot layout, initial SharingState and update rule; ``bank_names`` are the learner's banks
    build_scheme: Callable
    default_learner: str = "qmix"
    needs: tuple[str, ...] = ()  # learner properties (``LearnerKind`` fields) it requires, e.g. ("team_value",)
    check: Callable[[TrainConfig], None] | None = None  # cross-field rules; raises ConfigError naming the value
    # fit_task(cfg, given) -> {dotted field: value}: defaults that depend on the task (BDPS: k = min(3, N) roles for
    # N agents) for the fields not in ``given``, the dotted paths the user set (in a preset or an override), whose
    # values ``make_config`` never changes (``check`` refuses them with the allowed range)
    fit_task: Callable[[TrainConfig, frozenset[str]], dict[str, Any]] | None = None
    # defaults: {learner: {dotted field: value}}: the settings the method's paper runs it with under that learner
    # (BDPS under QMIX: TD(lambda), updates per rollout, its epsilon schedule, the last action as input), applied by
    # ``make_config`` like ``fit_task``'s to the fields the user did not set; the config's ``method_defaults``
    # names every field either of them set
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    agent_id: str = "none"  # the agent indication ``env.agent_id=auto`` appends (FuPS+id: onehot)
    # agent_model(cfg, spec) -> psjax.agent_model.AgentModel replacing the value learner's default agent
    # network (BDPS's role and group networks); None = the learner's own network
    agent_model: Callable | None = None
    # pictures drawn after training, after the run's own (distance.png, snd.png), which one of the same name
    # replaces: draw(run_dir, cfg, runner, program) -> path or None (``psjax.run``); sharing.png is listed by the
    # methods whose partition it draws (``report.sharing_picture_of`` their table builder)
    pictures: tuple[Callable, ...] = ()
    # the method's own options: a frozen dataclass of ``psjax.fields.doc_field`` fields named with the method's
    # prefix, defined in its module; registering adds them to the config's sharing section (``cfg.sharing.<field>``,
    # ``sharing.<field>=value``); None = none beyond SharingConfig's
    options: type | None = None


_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (replacing one of the same name: re-imports and tests); returns it."""
    if method.default_learner not in LEARNER_KINDS:
        raise ConfigError(f"method {method.name!r}: default_learner={method.default_learner!r} is not a learner; "
                          f"allowed: {', '.join(LEARNER_KINDS)}")
    unknown = [t for t in method.needs if t not in TRAITS]
    if unknown:
        raise ConfigError(f"method {method.name!r}: needs={unknown} are not learner properties; "
                          f"allowed: {', '.join(TRAITS)}")
    if method.options is not None:  # before the defaults are checked: they may set the method's own options
        add_options(method.options)
    for learner, values in method.defaults.items():  # learners that exist, fields by their dotted paths
        if learner not in LEARNER_KINDS:
            raise ConfigError(f"method {method.name!r}: defaults for learner={learner!r}, which is not a learner; "
                              f"allowed: {', '.join(LEARNER_KINDS)}")
        for path, value in values.items():
            if resolve_key(path, learner) != path:
                raise ConfigError(f"method {method.name!r}: defaults name {path!r}; allowed: dotted field paths "
                                  f"({resolve_key(path, learner)})")
            coerce(path, value)
    _METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove method ``name`` and, when no other method uses them, its options' fields."""
    method = _METHODS.pop(name, None)
    if method is not None and method.options is not None:
        if all(other.options is not method.options for other in _METHODS.values()):
            remove_options(method.options)


def names() -> tuple[str, ...]:
    """Registered method names, in registration order (``psjax.catalog``'s order for the built-in ones)."""
    return tuple(_METHODS)


def get(name: str) -> Method:
    if name not in _METHODS:
        raise ConfigError(f"unknown method alg={name!r}; allowed: {', '.join(_METHODS)}")
    return _METHODS[name]


def allowed_learners(method: Method) -> tuple[str, ...]:
    return tuple(name for name, kind in LEARNER_KINDS.items() if all(getattr(kind, t) for t in method.needs))


def check_learner(method: Method, learner: str, kind=None, options: str = "") -> None:
    """ConfigError when ``learner`` (its properties ``kind``: default ``LEARNER_KINDS[learner]``; a config's
    ``learner_kind`` where ``options``, the fields that change them, say so) lacks a property the method needs,
    naming the allowed learners."""
    kind = kind or LEARNER_KINDS[learner]
    missing = [t for t in method.needs if not getattr(kind, t)]
    if missing:
        options = f" with {options}" if options else ""
        raise ConfigError(
            f"alg={method.name} needs {' and '.join(TRAITS[t] for t in missing)}; learner={learner!r}{options} is "
            f"not allowed; allowed: {', '.join(allowed_learners(method))}"
        )


def describe(method: Method) -> dict[str, Any]:
    """The record as plain data (names of its callables), for listings."""
    return {"name": method.name, "doc": method.doc, "default_learner": method.default_learner,
            "learners": allowed_learners(method), "agent_id": method.agent_id,
            "agent_model": method.agent_model is not None,
            "defaults": {learner: dict(values) for learner, values in method.defaults.items()},
            "fit_task": method.fit_task is not None,
            "pictures": [getattr(p, "__name__", repr(p)) for p in method.pictures],
            "options": [] if method.options is None else [f.name for f in dataclasses.fields(method.options)]}
