"""Environment steps per second of the papers' environments under jit + vmap.

``python benchmarks/env_speed.py [--envs 1024] [--steps 100] [--only NAME ...] [--out FILE.json]``

Each environment runs ``envs`` copies for ``steps`` steps inside one jitted ``lax.scan`` with
uniformly random available actions (auto-reset included). Reported: compile time (the first
call, minus the timed run), and steps/s = envs * steps / seconds of the best of three timed
calls (agent-steps/s = steps/s * N).

``--reference`` instead prints reference episode returns on BPS 15a3c (random policy; every
agent steering to its own landmark, the colour-aware optimum's neighbourhood; every agent
steering to the mean of all landmarks, about the best a colour-blind shared policy can do),
to read learning curves against.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from psjax.config import EnvConfig
from psjax.envs import make_env

CASES = {
    "bps_15a3c": EnvConfig(name="bps", variant="15a3c"),
    "bps_30a3c": EnvConfig(name="bps", variant="30a3c"),
    "bps_30a5c": EnvConfig(name="bps", variant="30a5c"),
    "crware_mini": EnvConfig(name="crware", variant="mini"),
    "crware_tiny": EnvConfig(name="crware", variant="tiny"),
    "crware_small": EnvConfig(name="crware", variant="small"),
    "crware_medium": EnvConfig(name="crware", variant="medium"),
    "lbf_vector_8x8_2p_2f": EnvConfig(name="lbf", scenario="8x8-2p-2f-coop", lbf_fixed_levels=True),
    "lbf_grid_8x8_2p_2f_fov2": EnvConfig(name="lbf", scenario="8x8-2p-2f-coop", fov=2, lbf_grid_obs=True,
                                         lbf_fixed_levels=True),
    "lbf_grid_fov2_inversion": EnvConfig(name="lbf", scenario="8x8-2p-2f-coop", fov=2, lbf_grid_obs=True,
                                         lbf_fixed_levels=True, image_indication="inversion"),
    # the same task under jumanji's rules and lb-foraging's (the BDPS LBF preset), and SePS's persistent levels
    "lbf_15x15_4p_5f_jumanji": EnvConfig(name="lbf", scenario="15x15-4p-5f"),
    "lbf_15x15_4p_5f_lbforaging": EnvConfig(name="lbf", scenario="15x15-4p-5f", lbf_rules="lbforaging"),
    "lbf_8x8_2p_2f_seps": EnvConfig(name="lbf", scenario="8x8-2p-2f-coop", lbf_rules="lbforaging",
                                    lbf_seps_levels=True),
}


def runner(cfg: EnvConfig, envs: int, steps: int):
    """A jitted ``key -> total reward`` that resets ``envs`` environments and scans ``steps`` steps."""
    env = make_env(cfg)

    def run(key):
        key, k0 = jax.random.split(key)
        s, ts = jax.vmap(env.reset)(jax.random.split(k0, envs))

        def body(carry, key):
            s, ts = carry
            k_a, k_s = jax.random.split(key)
            a = jax.random.categorical(k_a, jnp.where(ts.avail_actions, 0.0, -jnp.inf)).astype(jnp.int32)
            s, ts = jax.vmap(env.step)(jax.random.split(k_s, envs), s, a)
            return (s, ts), ts.reward.sum()

        _, rew = jax.lax.scan(body, (s, ts), jax.random.split(key, steps))
        return rew.sum()

    return env.spec, jax.jit(run)


def measure(cfg: EnvConfig, envs: int, steps: int) -> dict:
    spec, run = runner(cfg, envs, steps)
    t0 = time.perf_counter()
    run(jax.random.PRNGKey(0)).block_until_ready()
    first = time.perf_counter() - t0
    times = []
    for k in range(3):
        t0 = time.perf_counter()
        run(jax.random.PRNGKey(k + 1)).block_until_ready()
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "agents": spec.num_agents, "obs_dim": spec.obs_dim, "envs": envs, "steps": steps,
        "compile_s": round(first - best, 2), "run_s": round(best, 3),
        "steps_per_s": round(envs * steps / best), "agent_steps_per_s": round(envs * steps * spec.num_agents / best),
    }


def bps_reference(envs: int = 256, seed: int = 0) -> dict:
    """Mean episode return (50 steps) of three scripted policies on BPS 15a3c; see the module doc."""
    from psjax.envs.bps import VARIANTS, colours_of, make_bps

    split = VARIANTS["15a3c"]
    env = make_bps(split)
    colours = jnp.asarray(colours_of(split))
    moves = jnp.asarray([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])

    def steer(st, goal):
        """The action whose direction best matches ``goal - pos`` after braking the velocity."""
        want = (goal - st.pos) - 0.3 * st.vel
        score = want @ moves.T  # [N, 5]
        return jnp.where(jnp.linalg.norm(want, axis=-1) < 0.05, 0, jnp.argmax(score, -1)).astype(jnp.int32)

    policies = {
        "random": lambda st, k: jax.random.randint(k, (env.spec.num_agents,), 0, 5),
        "own landmark (colour-aware)": lambda st, k: steer(st, st.landmarks[colours]),
        "mean of landmarks (colour-blind)": lambda st, k: steer(st, jnp.broadcast_to(
            st.landmarks.mean(0), st.pos.shape)),
    }
    out = {}
    for name, pol in policies.items():
        def episode(key, pol=pol):
            k0, key = jax.random.split(key)
            ws, ts = env.reset(k0)

            def body(carry, k):
                ws, _ = carry
                k_a, k_s = jax.random.split(k)
                ws, ts = env.step(k_s, ws, pol(ws.env_state, k_a))
                return (ws, ts), ts.episode_return

            _, rets = jax.lax.scan(body, (ws, ts), jax.random.split(key, env.spec.max_steps))
            return rets[-1]

        out[name] = float(jax.jit(jax.vmap(episode))(jax.random.split(jax.random.PRNGKey(seed), envs)).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--only", nargs="*", default=None, choices=tuple(CASES))
    ap.add_argument("--out", default=None)
    ap.add_argument("--reference", action="store_true", help="print BPS 15a3c reference returns and exit")
    args = ap.parse_args()
    if args.reference:
        for name, ret in bps_reference().items():
            print(f"BPS 15a3c {name:34s} episode return {ret:8.2f}")
        return
    results = {"device": str(jax.devices()[0].device_kind), "cases": {}}
    print(f"device: {results['device']}  envs={args.envs} steps={args.steps}")
    print(f"{'env':28s} {'N':>3s} {'D':>5s} {'compile s':>9s} {'steps/s':>12s} {'agent-steps/s':>14s}")
    for name in args.only or CASES:
        r = measure(CASES[name], args.envs, args.steps)
        results["cases"][name] = r
        print(f"{name:28s} {r['agents']:3d} {r['obs_dim']:5d} {r['compile_s']:9.2f} {r['steps_per_s']:12,d} "
              f"{r['agent_steps_per_s']:14,d}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
