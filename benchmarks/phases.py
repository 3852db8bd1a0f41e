#!/usr/bin/env python
"""Where one psjax training iteration's time goes: each phase jitted and timed on its own, interleaved.

    python benchmarks/phases.py env=mpe_spread alg=fups learner=ppo num_envs=16 rollout_len=128 \\
        epochs=4 num_minibatches=4 lr=2.5e-4 lr_decay=true gae_lambda=0.95 normalize_adv=true
    python benchmarks/phases.py --case ippo_ff_mpe        # a benchmarks/peers.py case's psjax config
    python benchmarks/phases.py --case qmix_rnn_smax --repeats 5

Phases of one iteration (one seed, the config's rollout), each a jitted function called ``--iters`` times
in a scan so dispatch does not count:

* ``env``: ``rollout_len`` env steps of every env under uniformly random available actions;
* ``rollout``: the loop's rollout, acting (the learner's ``act``) + env steps + the stored Transition;
* ``update``: the learner's update on a stored rollout (targets, buffer, shuffles, gradient steps);
* ``sharing``: the scheme's update (MAPD rounds, restructuring, identity VAEs where the method has them);
* ``iteration``: the loop's whole iteration (all of the above + episode metrics).

``acting`` = rollout - env and ``rest`` = iteration - rollout - update - sharing are differences of
medians, so they carry the noise of both terms. Timings are measurements, never tests.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def build(cfg, iters: int) -> dict:
    """The phase functions of ``cfg``, each ``(runner, traj, key) -> outputs`` jitted over ``iters`` repeats."""
    import jax
    import jax.numpy as jnp

    from psjax import train as loop

    parts = loop.make_parts(cfg)
    env, learner, scheme = parts.env, parts.learner, parts.scheme
    steps = parts.rollout_len

    def repeat(fn):
        """``fn(runner, traj, last, key) -> (runner', outputs)`` repeated in a scan; the runner is carried, so a
        phase that writes the replay buffer updates it in place as the training loop does."""
        def run(runner, traj, last, key):
            def body(r, k):
                return fn(r, traj, last, k)

            return jax.lax.scan(body, runner, jax.random.split(key, iters))[1]

        return jax.jit(run, donate_argnums=0)  # the buffer is updated in place, not copied per call

    def env_only(runner, traj, last, key):
        def step(carry, k):
            state, ts = carry
            k_act, k_env = jax.random.split(k)
            actions = jax.random.categorical(k_act, jnp.where(ts.avail_actions, 0.0, -1e9))
            state, ts = jax.vmap(env.step)(jax.random.split(k_env, parts.num_envs), state, actions)
            return (state, ts), ts.reward.sum()

        return runner, jax.lax.scan(step, (runner.env_state, runner.ts), jax.random.split(key, steps))[1].sum()

    def rollout(runner, traj, last, key):
        carry, (t, step_ts) = loop.rollout_steps(parts, runner.learner, runner.sharing, runner.env_state, runner.ts,
                                            runner.hidden, key, runner.env_steps, steps, greedy=False)
        return runner, jax.tree.map(lambda x: x.sum(), (t.reward, t.extras))

    def update(runner, traj, last, key):
        state, metrics = learner.update(runner.learner, runner.sharing, traj, last, runner.hidden, key,
                                        runner.env_steps + 10**6)
        return runner._replace(learner=state), jax.tree.map(lambda x: x.sum(), metrics)

    def sharing(runner, traj, last, key):
        out = scheme.update(runner.sharing, runner.learner, traj, key, runner.env_steps, runner.hidden)
        return runner, jax.tree.map(lambda x: x.sum(), (out[0].slots, out[2]))

    def iteration(runner, traj, last, key):
        new, metrics = loop._iteration(parts, runner._replace(key=key))
        return new, jax.tree.map(lambda x: x.sum(), metrics)

    def sample_rollout(runner, key):
        (_, last, _), (t, _) = loop.rollout_steps(parts, runner.learner, runner.sharing, runner.env_state, runner.ts,
                                             runner.hidden, key, runner.env_steps, steps, greedy=False)
        return t, last

    return {"parts": parts, "init": jax.jit(lambda k: loop.init_runner(parts, k)), "sample": jax.jit(sample_rollout),
            "phases": {name: repeat(fn) for name, fn in
                       {"env": env_only, "rollout": rollout, "update": update, "sharing": sharing,
                        "iteration": iteration}.items()}}


def measure(cfg, iters: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    b = build(cfg, iters)
    key = jax.random.PRNGKey(0)
    runner = b["init"](key)
    traj, last = b["sample"](runner, key)
    compiled, compile_s = {}, {}
    def fresh():  # each call donates its runner: hand it a copy made before the clock starts
        return jax.block_until_ready(jax.tree.map(jnp.copy, runner))

    for name, fn in b["phases"].items():
        start = time.perf_counter()
        compiled[name] = fn.lower(runner, traj, last, key).compile()
        compile_s[name] = time.perf_counter() - start
        jax.block_until_ready(compiled[name](fresh(), traj, last, key))  # warm-up
    times = {name: [] for name in compiled}
    for r in range(repeats):  # round-robin: load that comes and goes hits every phase alike
        for name, fn in compiled.items():
            r_copy = fresh()
            start = time.perf_counter()
            jax.block_until_ready(fn(r_copy, traj, last, jax.random.PRNGKey(r + 1)))
            times[name].append((time.perf_counter() - start) / iters * 1e3)
    ms = {name: statistics.median(t) for name, t in times.items()}
    ms["acting"] = ms["rollout"] - ms["env"]
    ms["rest"] = ms["iteration"] - ms["rollout"] - ms["update"] - ms["sharing"]
    return {"ms_per_iteration": ms, "compile_s": compile_s, "steps_per_iteration": cfg.steps_per_iteration,
            "all_ms": times}


def table(result: dict) -> str:
    ms = result["ms_per_iteration"]
    total = ms["iteration"]
    rows = ["| phase | ms per iteration | share of the iteration |", "|---|---:|---:|"]
    for name in ("env", "acting", "rollout", "update", "sharing", "rest", "iteration"):
        rows.append(f"| {name} | {ms[name]:.2f} | {ms[name] / total:.0%} |")
    steps_per_s = result["steps_per_iteration"] / total * 1e3
    tail = f"{result['steps_per_iteration']:,} env steps per iteration: {steps_per_s:,.0f} env steps/s"
    return "\n".join(rows) + "\n\n" + tail


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="key=value config overrides (as `python -m psjax train`)")
    p.add_argument("--case", default=None, help="use a benchmarks/peers.py case's psjax config (then overrides)")
    p.add_argument("--iters", type=int, default=4, help="iterations per timed call")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per phase (median taken)")
    args = p.parse_args(argv)
    from psjax.config import make_config

    base, preset = {}, None
    if args.case:
        sys.path.insert(0, str(REPO / "benchmarks"))
        import peers

        base = {k: v for k, v in peers.CASES[args.case].psjax.items() if k != "preset"}
        preset = peers.CASES[args.case].psjax.get("preset")
    overrides = dict(kv.split("=", 1) for kv in args.overrides)
    cfg = make_config({**base, "q.learning_starts": 0, **overrides}, preset=preset) if (
        {**base, **overrides}.get("learner", "qmix") in ("qmix", "vdn", "iql")) else make_config(
        {**base, **overrides}, preset=preset)
    result = measure(cfg, args.iters, args.repeats)
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
