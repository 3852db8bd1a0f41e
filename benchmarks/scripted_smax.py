"""Win rate of a scripted focus-fire policy on SMAX against jaxmarl's heuristic enemy.

A reference point for the learning results in docs/results.md: how hard is the map without
any micro beyond "everyone shoots the same enemy"? Every ally walks toward the chosen enemy and
shoots it once in range (any other enemy in range otherwise).

    .venv/bin/python benchmarks/scripted_smax.py 3m
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp

from psjax.envs._jaxmarl import jaxmarl_module

EPISODES = 1024


def focus_fire_actions(env, state, target_rule: str) -> dict:
    """Actions 0-3 move N/E/S/W, 4 stop, 5 + j attack enemy j (jaxmarl's discrete SMAX actions)."""
    n = env.num_allies
    s = state.state
    enemy_alive = s.unit_alive[n:]
    if target_rule == "lowest_health":
        target = jnp.argmin(jnp.where(enemy_alive, s.unit_health[n:], jnp.inf))
    else:  # the first enemy still alive
        target = jnp.argmax(enemy_alive)
    avail = env.get_avail_actions(state)
    actions = {}
    for i in range(n):
        can_attack = avail[f"ally_{i}"][5:].astype(bool)
        d = s.unit_positions[n + target] - s.unit_positions[i]
        move = jnp.where(jnp.abs(d[0]) > jnp.abs(d[1]), jnp.where(d[0] > 0, 1, 3), jnp.where(d[1] > 0, 0, 2))
        fallback = jnp.where(can_attack.any(), 5 + jnp.argmax(can_attack), move)
        actions[f"ally_{i}"] = jnp.where(can_attack[target], 5 + target, fallback)
    return actions


def win(env, key, target_rule: str, max_steps: int = 100):
    n = env.num_allies
    k_reset, k_steps = jax.random.split(key)
    _, state = env.reset(k_reset)

    def step(carry, k):
        state, over, won = carry
        _, next_state, _, _, _ = env.step_env(k, state, focus_fire_actions(env, state, target_rule))
        alive = next_state.state.unit_alive
        allies_dead, enemies_dead = ~alive[:n].any(), ~alive[n:].any()
        won = jnp.where(over, won, enemies_dead & ~allies_dead)
        state = jax.tree.map(lambda a, b: jnp.where(over, a, b), state, next_state)
        return (state, over | allies_dead | enemies_dead, won), None

    (_, _, won), _ = jax.lax.scan(step, (state, False, False), jax.random.split(k_steps, max_steps))
    return won


def main(argv: list[str]) -> None:
    map_name = argv[0] if argv else "3m"
    smax = jaxmarl_module("environments.smax")
    env = smax.HeuristicEnemySMAX(scenario=smax.map_name_to_scenario(map_name))
    keys = jax.random.split(jax.random.PRNGKey(0), EPISODES)
    for rule in ("first_alive", "lowest_health"):
        won = jax.jit(jax.vmap(lambda k: win(env, k, rule)))(keys)  # noqa: B023
        print(f"{map_name} focus fire ({rule}): win rate {float(won.mean()):.3f} over {EPISODES} episodes")


if __name__ == "__main__":
    main(sys.argv[1:])
