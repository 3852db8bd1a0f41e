"""The configuration schema: frozen dataclasses, YAML presets and ``key=value`` overrides.

Every field carries its documentation and, where it has one, its allowed range or choices
(``psjax.fields``). This module knows the fields and the learners, not the methods: which
methods exist, their default learners and their cross-field rules are the method registry's
(``psjax.registry``), and ``psjax.config.make_config`` combines the two. Nothing here imports JAX.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

from psjax.fields import ConfigError, UnknownFieldError, check_rules
from psjax.fields import doc_field as _f

ENVS = ("smax", "mpe_spread", "lbf", "speaker_listener", "matrix", "typed", "bps", "crware")


class LearnerKind(NamedTuple):
    """What a learner can do: the properties a method's requirements are checked against."""

    value_based: bool  # per-agent Q values, a replay buffer, epsilon-greedy acting (QMIX / VDN / IQL)
    team_value: bool  # mixes the agents' values into one team value (QMIX, VDN)
    recurrent: bool  # recurrent (GRU) agent networks
    policy: bool  # a policy network and a critic (A2C / PPO; recurrent with ac.recurrent)
    banks: tuple[str, ...]  # keys of the learner's params that are slot banks (for its default agent network)
    replay: bool = False  # learns from a replay buffer of stored sequences (QMIX / VDN / IQL), not each rollout once


LEARNER_KINDS = {
    "qmix": LearnerKind(value_based=True, team_value=True, recurrent=True, policy=False, banks=("agent",), replay=True),
    "vdn": LearnerKind(value_based=True, team_value=True, recurrent=True, policy=False, banks=("agent",), replay=True),
    "iql": LearnerKind(value_based=True, team_value=False, recurrent=True, policy=False, banks=("agent",), replay=True),
    # PQN: on-policy Q(lambda), no replay buffer, no target network; its mixer is q.pqn_mixer (none: no team value)
    "pqn": LearnerKind(value_based=True, team_value=True, recurrent=True, policy=False, banks=("agent",)),
    "a2c": LearnerKind(value_based=False, team_value=False, recurrent=False, policy=True, banks=("actor", "critic")),
    "ppo": LearnerKind(value_based=False, team_value=False, recurrent=False, policy=True, banks=("actor", "critic")),
}
LEARNERS = tuple(LEARNER_KINDS)
VALUE_LEARNERS = tuple(name for name, kind in LEARNER_KINDS.items() if kind.value_based)
CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"  # the YAML presets, package data (pyproject.toml)
DEFAULT_BURN_IN = 8  # q.burn_in = -1: replay items' burn-in steps, at most a quarter of an item


# the reported return's convention where env.team_return = auto: what the env's papers and reference code report
# (JaxMARL's MPE log wrapper and EPyMARL's common reward sum the agents' rewards; the SePS code sums its per-agent
# episode rewards on BPS, C-RWARE and LBF; SMAX gives every agent the team's reward, whose mean is that reward)
PAPER_TEAM_RETURN = {"smax": "mean", "mpe_spread": "sum", "speaker_listener": "sum", "lbf": "sum", "bps": "sum",
                     "crware": "sum", "typed": "mean", "matrix": "mean"}
# the convention of run folders written before env.team_return existed (their env's spec.team_reward)
LEGACY_TEAM_RETURN = {**PAPER_TEAM_RETURN, "mpe_spread": "mean", "speaker_listener": "mean", "bps": "mean"}


def team_return_of(env: dict, summary: dict | None = None) -> str:
    """A run folder's reported-return convention, "sum" or "mean", from its summary.json (``team_return``) or its
    config's env section; folders written before the field existed: ``LEGACY_TEAM_RETURN``."""
    if summary and summary.get("team_return"):
        return summary["team_return"]
    chosen = env.get("team_return")
    if chosen in ("sum", "mean"):
        return chosen
    return (PAPER_TEAM_RETURN if chosen == "auto" else LEGACY_TEAM_RETURN).get(env.get("name"), "mean")


@dataclass(frozen=True)
class EnvConfig:
    name: str = _f("lbf", "environment", choices=ENVS)
    map: str = _f("3m", "SMAX map name (any map jaxmarl registers)")
    num_agents: int = _f(3, "MPE spread and typed: number of agents", min=1)
    num_landmarks: int = _f(3, "MPE spread: number of landmarks", min=1)
    scenario: str = _f("8x8-2p-2f-coop", "LBF scenario GRIDxGRID-Np-Mf[-coop]")
    fov: int = _f(-1, "LBF field of view in cells; -1 = whole grid", min=-1)
    time_limit: int = _f(0, "episode step limit; 0 = the environment's default", min=0)
    agent_id: str = _f(
        "auto", "agent indication appended to observations; auto = onehot for fups_id",
        choices=("auto", "none", "onehot", "binary"),
    )
    matrix_game: str = _f("climbing", "matrix env: payoff table", choices=("climbing", "penalty", "two_step"))
    num_colours: int = _f(3, "BPS: number of colours (agent types); C-RWARE's come from variant or "
                          "agents_per_colour", min=1)
    agents_per_colour: str = _f("", "BPS and C-RWARE: agents of each colour, comma separated (e.g. 2,2,2,12,12); "
                                "empty = num_agents split evenly over num_colours (BPS), the variant's robots "
                                "(C-RWARE)")
    variant: str = _f("", "BPS / C-RWARE named setting (bps: 15a3c, 30a3c, 30a5c, 30a5c-uneven; crware: mini, "
                      "tiny, small, medium); overrides num_agents / num_colours / agents_per_colour; empty = use "
                      "those fields")
    bps_shuffle_obs: bool = _f(False, "BPS: each colour sees its observation in a fixed permutation of its own (the "
                               "reference's large-spread v5 / v6)")
    crware_difficulty: str = _f("normal", "C-RWARE: requested shelves = int(robots x 2 / 1 / 0.5), the reference's "
                                "-easy / (none) / -hard ids", choices=("easy", "normal", "hard"))
    crware_shuffle_obs: bool = _f(False, "C-RWARE: each colour sees its observation in a fixed permutation of its "
                                  "own (the color branch head; off in the SePS-era commit)")
    lbf_grid_obs: bool = _f(False, "LBF: grid (image) observations, agents / food / access layers, channels last")
    lbf_fixed_levels: bool = _f(False, "LBF: agent levels drawn once (from lbf_levels_seed) and kept across resets")
    lbf_levels_seed: int = _f(0, "LBF: seed of the persistent agent levels", min=0)
    lbf_rules: str = _f("jumanji", "LBF: jumanji = its spawn and step; lbforaging = lb-foraging v1.1.1's (the papers': "
                        "food levels below the bound, spacing, all actions available; docs/envs.md)",
                        choices=("jumanji", "lbforaging"))
    lbf_seps_levels: bool = _f(False, "LBF: agent i has level i % 3 + 1 in every episode, hidden from the vector "
                               "observation (lb-foraging's seps branch, SePS / AdaPS)")
    lbf_grid_hide_levels: bool = _f(False, "LBF grid observations: the agent layer marks where agents stand, not "
                                    "their levels (kinds unseen: the image indication task)")
    team_return: str = _f(
        "auto", "the reported episode return: sum or mean of the agents' rewards; auto = what the env's papers report "
                "(docs/config.md); training is unchanged (mixers use spec.team_reward)",
        choices=("auto", "sum", "mean"))
    image_indication: str = _f(
        "none", "agent indication channels added to image observations (Terry et al. 4.2)",
        choices=("none", "identity", "geometric", "binary", "inversion", "inversion_replacement"),
    )


@dataclass(frozen=True)
class SharingConfig:
    """The options every method shares (the MAPD and SND metrics); a method's own options are its module's
    dataclass, registered with its ``Method`` (``add_options``)."""

    snd_interval: int = _f(0, "System Neural Diversity as a metric (A2C / PPO and the value learners): iterations "
                           "between measurements, logged as snd (NaN between) and drawn in snd.png; 0 = off. DiCo "
                           "measures after every iteration", min=0)
    snd_rows: int = _f(32, "SND with feed-forward actors: env steps drawn from the rollout, every agent's policy "
                           "evaluated on every agent's observation there (recurrent ones: the whole rollout)", min=1)
    mapd_interval: int = _f(0, "MAPD policy distance as a metric: training iterations between distance rounds "
                            "(logged as mapd_distance[i,j], NaN between rounds); 0 = off. MADPS runs its rounds every "
                            "madps_interval instead", min=0)
    mapd_distance: str = _f("wasserstein", "MAPD: distance between the latent Gaussians",
                            choices=("wasserstein", "hellinger", "bhattacharyya"))
    mapd_pool_size: int = _f(1024, "MAPD: observations drawn (without replacement) from the observation buffer or the "
                                   "round's rollout, pooled over agents; every agent's policy is evaluated on all",
                                   min=1)
    mapd_buffer_size: int = _f(512, "MAPD with A2C / PPO: env steps kept in the ring buffer the distance rounds measure"
                                    " on (value learners measure on the round's rollout)", min=1)
    mapd_buffer_add: int = _f(40, "MAPD with A2C / PPO: env steps of each iteration's rollout written to the buffer "
                              "(drawn uniformly; all of them when the rollout has no more)", min=1)
    mapd_latent: int = _f(10, "MAPD: conditional VAE latent size", min=1)
    mapd_hidden: int = _f(32, "MAPD: conditional VAE hidden width", min=1)
    mapd_epochs: int = _f(10, "MAPD: VAE epochs per round over the pooled (policy, observation) pairs (a fresh "
                          "VAE every round)", min=1)
    mapd_batch_size: int = _f(128, "MAPD: VAE minibatch size", min=1)
    mapd_lr: float = _f(3e-4, "MAPD: VAE Adam learning rate", min=0.0)
    mapd_kl_coef: float = _f(0.01, "MAPD: weight of the KL term of the VAE loss", min=0.0)
    mapd_vae_pairs: str = _f(
        "own", "MAPD: the VAE's training pairs: own = each agent's policy on its own observations (the reference); "
               "pooled = every policy on every pooled observation (docs/config.md)", choices=("own", "pooled"))


@dataclass(frozen=True)
class QConfig:
    num_envs: int = _f(16, "parallel environments", min=1)
    rollout_len: int = _f(128, "env steps per rollout and per stored sequence", min=1)
    hidden: int = _f(64, "agent network width (Dense -> GRU -> Dense)", min=1)
    lr: float = _f(5e-4, "Adam learning rate", min=0.0)
    lr_decay: bool = _f(False, "linear learning-rate decay to zero over training")
    gamma: float = _f(0.99, "discount", min=0.0, max=1.0)
    buffer_size: int = _f(2048, "replay capacity in stored sequences", min=1)
    batch_size: int = _f(32, "sequences per gradient step", min=1)
    updates_per_rollout: int = _f(4, "gradient steps after each rollout", min=1)
    learning_starts: int = _f(10_000, "env steps collected before the first update", min=0)
    eps_start: float = _f(1.0, "initial epsilon", min=0.0, max=1.0)
    eps_end: float = _f(0.05, "final epsilon", min=0.0, max=1.0)
    eps_decay_steps: int = _f(50_000, "env steps of linear epsilon decay", min=1)
    target_update_interval: int = _f(200, "gradient steps between hard target updates (target_tau = 0)", min=1)
    target_tau: float = _f(0.0, "soft (Polyak) target updates: target <- tau * online + (1 - tau) * target after "
                           "every gradient step; 0 = hard copies every target_update_interval steps", min=0.0, max=1.0)
    double_q: bool = _f(True, "double-Q targets (online argmax, target value)")
    td_lambda: float = _f(0.0, "lambda of TD(lambda) targets along stored sequences; 0 = one-step", min=0.0, max=1.0)
    stored_state: bool = _f(True, "start each replay item from the GRU state and last action recorded at collection "
                                  "(R2D2's stored state); false = from zeros (psjax before issue 39)")
    burn_in: int = _f(-1, "replay items: the first steps only warm the GRU up, their TD errors left out of the loss "
                          "(R2D2); -1 = min(8, rollout_len // 4); 0 = every step counts", min=-1)
    last_action: bool = _f(False, "recurrent agents also read the one-hot of their previous action (zeros at an "
                           "episode's start): pymarl's obs_last_action, BDPS's Q_U(tau, a_{t-1})")
    max_grad_norm: float = _f(10.0, "global gradient-norm clip", min=0.0)
    mixer_embed: int = _f(32, "QMIX mixing-network width", min=1)
    hypernet_hidden: int = _f(64, "QMIX hypernetwork hidden width", min=1)
    mixer_init_scale: float = _f(
        1e-3, "variance scale of the hypernetworks' output layers at init; small = near-zero mixing weights at "
        "the start, which stops QMIX's overestimation spiral (1.0 diverged on SMAX 3m and MPE spread)", min=0.0)
    layer_norm: bool = _f(False, "LayerNorm between the agent network's hidden Dense layer and its ReLU (PQN's "
                          "normalisation; the pqn learner's preset turns it on)")
    optimizer: str = _f("adam", "adam, or radam (rectified Adam: PQN's, JaxMARL pqn_vdn_rnn's)",
                        choices=("adam", "radam"))
    pqn_mixer: str = _f("vdn", "learner=pqn: the value head the lambda-returns are taken on: vdn = sum of the "
                        "agents' utilities (JaxMARL's pqn_vdn), qmix = QMIX's monotonic mixer, none = each agent "
                        "its own (IQL)", choices=("vdn", "qmix", "none"))
    epochs: int = _f(1, "learner=pqn: passes over each rollout (no replay: every rollout is learned from, then "
                     "dropped)", min=1)
    num_minibatches: int = _f(1, "learner=pqn: minibatches per pass, each a split of the env axis (whole "
                              "rollout-long sequences); must divide num_envs", min=1)


@dataclass(frozen=True)
class ACConfig:
    num_envs: int = _f(8, "parallel environments", min=1)
    rollout_len: int = _f(5, "env steps per rollout (A2C: the n of n-step returns)", min=1)
    hidden: int = _f(64, "actor / critic width: two hidden layers, the second a GRU with `recurrent` (MADPS's actor "
                     "three: front 2 + back 1; `shared_torso`: Dense, GRU, then one Dense layer in each head)", min=1)
    lr: float = _f(3e-4, "Adam learning rate", min=0.0)
    adam_eps: float = _f(1e-5, "Adam epsilon", min=0.0)
    lr_decay: bool = _f(False, "linear learning-rate decay to zero over training")
    gamma: float = _f(0.99, "discount", min=0.0, max=1.0)
    gae_lambda: float = _f(1.0, "GAE lambda; 1.0 = plain n-step returns", min=0.0, max=1.0)
    ent_coef: float = _f(0.01, "entropy bonus", min=0.0)
    vf_coef: float = _f(
        0.5, "value-loss weight c: loss = policy + c * mean (V - R)^2 - ent_coef * entropy; A2C 0.5 (the SePS code's), "
             "the PPO preset 0.25 (CleanRL / JaxMARL's 0.5 x 0.5)",
        min=0.0)
    max_grad_norm: float = _f(0.5, "global gradient-norm clip", min=0.0)
    clip_eps: float = _f(0.2, "PPO ratio clip", min=0.0)
    clip_value: bool = _f(False, "PPO value clipping (JaxMARL's IPPO / MAPPO): the new value also clipped to within "
                                 "clip_eps of the rollout's, the larger squared error taken; off = plain squared error")
    epochs: int = _f(1, "passes over each rollout (PPO > 1)", min=1)
    num_minibatches: int = _f(1, "minibatches per pass (PPO)", min=1)
    normalize_adv: bool = _f(False, "standardise advantages per minibatch")
    central_critic: bool = _f(False, "critic on the global state + agent id (MAPPO) instead of local obs")
    recurrent: bool = _f(
        False, "GRU actor and critic (Dense -> GRU -> Dense; IPPO / MAPPO-rnn): states carried through the rollout, "
               "zeroed at episode ends; PPO's minibatches are whole env trajectories")
    shared_torso: bool = _f(
        False, "with recurrent: actor and critic share one Dense -> GRU torso, each with its own head (JaxMARL's "
               "ActorCriticRNN); needs central_critic=false (docs/config.md)")
    last_action: bool = _f(False, "with `recurrent`: the actor also reads the one-hot of the agent's previous "
                           "action (zeros at an episode's start), as q.last_action does for the Q agents")


@dataclass(frozen=True)
class TrainConfig:
    env: EnvConfig = field(default_factory=EnvConfig, metadata={"doc": "environment"})
    alg: str = _f("fups", "parameter-sharing method: any name in the method registry (`python -m psjax fields` "
                  "lists them; psjax.registry)")
    learner: str = _f("", "learner; empty = the method's default (make_config writes it in)",
                      choices=("",) + LEARNERS)
    method_defaults: str = _f("", "written by make_config: the fields (dotted, space-separated) whose values came from "
                                  "alg's registry record because no preset or override set them; kept on resume")
    sharing: SharingConfig = field(default_factory=lambda: SharingSection(),
                                   metadata={"doc": "method options: SharingConfig's and every method's own"})
    q: QConfig = field(default_factory=QConfig, metadata={"doc": "QMIX / VDN / IQL options"})
    ac: ACConfig = field(default_factory=ACConfig, metadata={"doc": "A2C / PPO options"})
    seed: int = _f(0, "first seed; seeds are seed .. seed+seeds-1", min=0)
    seeds: int = _f(1, "seeds trained together (vmapped)", min=1)
    devices: int = _f(0, "local devices the seeds are sharded over (their leading axis, no collectives; "
                      "psjax.shard): 0 = the most local devices that divide `seeds` evenly; N = exactly N, which "
                      "must divide `seeds` and exist", min=0)
    parallel: str = _f("seeds", "what the devices split: seeds = the rows (seeds, sweep points; no collectives); envs ="
                                " each run's envs, rollout and replay buffer (data parallel) (docs/scaling.md)",
                       choices=("seeds", "envs"))
    distributed: str = _f("off", "several processes (hosts) in one run: off = this process alone; on = "
                                 "jax.distributed.initialize from coordinator / num_processes / process_id or the "
                                 "environment",
                          choices=("off", "on"))
    coordinator: str = _f("", "distributed=on: the coordinator's host:port (process 0's); empty = from the "
                          "environment")
    num_processes: int = _f(0, "distributed=on: the number of processes; 0 = from the environment", min=0)
    process_id: int = _f(-1, "distributed=on: this process's index, 0 .. num_processes-1; -1 = from the "
                         "environment", min=-1)
    steps: int = _f(200_000, "environment steps per seed (summed over parallel envs)", min=1)
    sweep: str = _f("", "hyperparameters trained side by side in one program: `FIELD=v1,v2,...` entries joined by `;` "
                        "(CLI: sweep.FIELD=v1,v2,...); numeric fields only; empty = no sweep")
    sweep_mode: str = _f("grid", "how sweep entries combine: grid = every combination; zip = the i-th values of "
                         "every entry together (all entries equally long)", choices=("grid", "zip"))
    memory_gb: float = _f(0.0, "device memory (GiB) a run must fit, checked from shapes before compiling and from XLA's"
                               " account of the compiled chunk before allocating; 0 = the device's own", min=0.0)
    eval_every: float = _f(0.05, "evaluation (of eval_policy) every this fraction of training", min=0.0, max=1.0)
    eval_envs: int = _f(32, "episodes per evaluation and policy, per seed (one in each of this many fresh envs)",
                        min=1)
    eval_policy: str = _f(
        "auto", "policy evaluations act with: greedy = argmax; sample = the training policy; both; auto = sample for "
                "a2c / ppo, greedy for Q learners (docs/config.md)", choices=("auto", "greedy", "sample", "both"))
    checkpoint: bool = _f(True, "write orbax checkpoints (at most every checkpoint_every_s, always after a call's "
                          "last chunk) for resume=")
    checkpoint_every_s: float = _f(60.0, "seconds of training between checkpoints (each after an evaluation; the last "
                                         "chunk always); 0 = after every evaluation", min=0.0)
    on_nonfinite: str = _f("stop", "non-finite loss, gradient, Q value or parameter: stop (safer: no run trains on "
                           "into a false result; the last good checkpoint is kept for resume=) or warn (train on, "
                           "flagged)", choices=("stop", "warn"))
    out_dir: str = _f("runs", "parent folder of run folders")
    compile_cache: str = _f("~/.cache/psjax/xla", "folder of JAX's persistent compilation cache: a program compiled "
                                                  "before (same config, JAX, device) is loaded instead; empty = JAX's "
                                                  "own setting")
    compile_cache_gb: float = _f(4.0, "size limit of compile_cache (GiB): the least recently used programs are "
                                 "removed beyond it", min=0.01)
    run_name: str = _f("", "run folder name; empty = env-alg-learner-timestamp")
    progress: bool = _f(True, "show a progress bar")
    logger: str = _f("none", "logging backends beside the JSONL / CSV (extras: pip install -e '.[tensorboard]' / "
                             "'.[wandb]'): tensorboard = <run>/tensorboard/seed_<s>/; wandb = a W&B run per seed",
                     choices=("none", "tensorboard", "wandb", "tensorboard+wandb"))
    wandb_project: str = _f("psjax", "W&B project (logger=wandb)")
    wandb_mode: str = _f("online", "W&B mode (logger=wandb): online; offline = files under <run>/wandb only, "
                         "uploaded later with `wandb sync` (clusters without network); disabled",
                         choices=("online", "offline", "disabled"))

    @property
    def learner_name(self) -> str:
        """The learner; a config built by ``make_config`` always names it (the method's default filled in)."""
        if not self.learner:
            raise ConfigError(f"learner is empty: build the config with psjax.config.make_config (alg={self.alg!r})")
        return self.learner

    @property
    def learner_kind(self) -> LearnerKind:
        """The learner's properties; A2C / PPO with ``ac.recurrent`` are recurrent; PQN without a mixer mixes no
        team value."""
        kind = LEARNER_KINDS[self.learner_name]
        for applies, _, changes in KIND_CHANGES:
            if applies(self):
                kind = kind._replace(**changes)
        return kind

    @property
    def value_mixer(self) -> str:
        """A value learner's mixer: ``qmix``, ``vdn`` or ``none`` (IQL; PQN as ``q.pqn_mixer`` says)."""
        if self.learner_name == "pqn":
            return self.q.pqn_mixer
        return {"qmix": "qmix", "vdn": "vdn"}.get(self.learner_name, "none")

    @property
    def is_value_based(self) -> bool:
        return self.learner_kind.value_based

    @property
    def learner_cfg(self) -> QConfig | ACConfig:
        return self.q if self.is_value_based else self.ac

    @property
    def steps_per_iteration(self) -> int:
        return self.learner_cfg.num_envs * self.learner_cfg.rollout_len

    @property
    def num_iterations(self) -> int:
        return max(1, math.ceil(self.steps / self.steps_per_iteration))

    @property
    def eval_policies(self) -> tuple[str, ...]:
        """The policies each evaluation runs (``greedy`` / ``sample``), the primary one first."""
        default = "greedy" if self.is_value_based else "sample"
        other = "sample" if default == "greedy" else "greedy"
        return {"auto": (default,), "both": (default, other)}.get(self.eval_policy, (self.eval_policy,))


# The fields that change a learner's properties from its ``LEARNER_KINDS`` entry: (applies(cfg), the field as
# ``key=value``, the properties it changes). ``TrainConfig.learner_kind`` applies them, ``kind_options`` names them.
KIND_CHANGES = (
    (lambda c: c.learner_name == "pqn" and c.q.pqn_mixer == "none", "q.pqn_mixer=none", {"team_value": False}),
    (lambda c: LEARNER_KINDS[c.learner_name].policy and c.ac.recurrent, "ac.recurrent=true", {"recurrent": True}),
)


def kind_options(cfg: TrainConfig) -> str:
    """The fields that change the learner's properties (``KIND_CHANGES``), as ``key=value`` (for errors); empty
    when none do."""
    return " ".join(label for applies, label, _ in KIND_CHANGES if applies(cfg))


# Learner-specific defaults layered under the user's overrides.
LEARNER_PRESETS: dict[str, dict[str, Any]] = {
    # PQN (Gallici et al.; JaxMARL pqn_vdn_rnn_smax.yaml: lambda 0.85, RAdam, grad clip 1, lr annealed, 4 epochs,
    # normalised layers) at psjax's CPU-sized QMIX widths: 16 envs x 128 steps, 2 minibatches of 8 trajectories
    # (SMAX 3m, 500k steps, 2 seeds: final greedy win rate 0.50, 0.38; with 64 envs x 4 minibatches 0.16, 0.00)
    "pqn": {"q.num_envs": 16, "q.rollout_len": 128, "q.td_lambda": 0.85, "q.epochs": 4, "q.num_minibatches": 2,
            "q.lr": 5e-4, "q.lr_decay": True, "q.optimizer": "radam", "q.max_grad_norm": 1.0, "q.layer_norm": True,
            "q.eps_end": 0.01, "q.eps_decay_steps": 100_000},
    "ppo": {"ac.num_envs": 16, "ac.rollout_len": 128, "ac.gae_lambda": 0.95, "ac.epochs": 4,
            "ac.num_minibatches": 4, "ac.normalize_adv": True, "ac.lr": 5e-4,
            "ac.vf_coef": 0.25},  # = CleanRL / JaxMARL IPPO's 0.5 x 0.5 * mean squared error (ACConfig.vf_coef)
}

# Short names accepted on the command line.
ALIASES = {"env": "env.name", "map": "env.map", "scenario": "env.scenario", "method": "alg"}


def field_docs(cls=None, prefix: str = "") -> dict[str, str]:
    """Flat ``dotted.name -> doc`` for every leaf field (of TrainConfig, the registered methods' options included)."""
    leaves = _LEAVES if cls is None else dict(_leaf_fields(cls, prefix))
    return {path: f.metadata.get("doc", "") for path, f in leaves.items()}


def _section(f: dataclasses.Field) -> type | None:
    """The dataclass of a section field of TrainConfig (``sharing``: SharingConfig plus the methods' options)."""
    if f.name == "sharing":
        return SharingSection
    sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
    return sub if sub is not None and dataclasses.is_dataclass(sub) else None


def _leaf_fields(cls, prefix=""):
    for f in dataclasses.fields(cls):
        sub = _section(f) if cls is TrainConfig else None
        if sub is not None:
            yield from _leaf_fields(sub, prefix + f.name + ".")
        else:
            yield prefix + f.name, f


# The config's sharing section: SharingConfig's fields, then those of every registered options dataclass in the
# order they were added (``add_options``; the registry adds a method's ``options``). Rebuilt, with the leaf table,
# whenever that list changes; the section keeps one class name so configs print and compare as one type.
_OPTIONS: list[type] = []
SharingSection: type = SharingConfig
_LEAVES: dict[str, dataclasses.Field] = {}


def _rebuild_sections() -> None:
    global SharingSection, _LEAVES
    fields, seen = [], {}
    for cls in (SharingConfig, *_OPTIONS):
        for f in dataclasses.fields(cls):
            if f.name in seen:
                continue
            seen[f.name] = cls
            fields.append((f.name, f.type, field(default=f.default, metadata=f.metadata)))
    SharingSection = dataclasses.make_dataclass("SharingSection", fields, frozen=True)
    SharingSection.__module__ = __name__  # pickles by name: this module's current SharingSection
    SharingSection.__doc__ = "SharingConfig's fields plus every registered method's options (``add_options``)."
    _LEAVES = dict(_leaf_fields(TrainConfig))


def add_options(cls: type) -> None:
    """Add the fields of the frozen dataclass ``cls`` (a method's options) to the config's sharing section, where
    presets, ``sharing.FIELD=value`` overrides, sweeps, ``python -m psjax fields`` and validation find them. Every
    field needs a doc (``psjax.fields.doc_field``) and a name no other section field has (a method prefix)."""
    if cls in _OPTIONS:
        return
    if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):
        raise ConfigError(f"options {cls!r} must be a frozen dataclass")
    owners = {f.name: owner for owner in (SharingConfig, *_OPTIONS) for f in dataclasses.fields(owner)}
    for f in dataclasses.fields(cls):
        owner = owners.get(f.name)
        if owner is not None and f is not next(g for g in dataclasses.fields(owner) if g.name == f.name):
            raise ConfigError(f"options {cls.__name__}: field {f.name!r} is already {owner.__name__}'s; allowed: a "
                              "name no other sharing option has (prefix it with the method's name)")
        if not f.metadata.get("doc") or f.default is dataclasses.MISSING:
            raise ConfigError(f"options {cls.__name__}: field {f.name!r} needs a default and a doc "
                              "(psjax.fields.doc_field)")
    _OPTIONS.append(cls)
    _rebuild_sections()


def remove_options(cls: type) -> None:
    """Undo ``add_options(cls)`` (a method unregistered, e.g. by a test)."""
    if cls in _OPTIONS:
        _OPTIONS.remove(cls)
        _rebuild_sections()


_rebuild_sections()


def resolve_key(key: str, learner: str) -> str:
    """Map a user key (``lr``, ``q.lr``, ``map``) to its dotted field path."""
    key = ALIASES.get(key, key)
    if key in _LEAVES:
        return key
    section = "q" if learner in VALUE_LEARNERS else "ac"
    for prefix in (section + ".", "env.", "sharing."):
        if prefix + key in _LEAVES:
            return prefix + key
    raise UnknownFieldError(
        f"unknown config field {key!r}; allowed: {', '.join(sorted(set(ALIASES) | set(_LEAVES)))}"
    )


def field_type(path: str) -> type:
    """The Python type (int, float, bool or str) of the leaf field at dotted ``path``."""
    f = _LEAVES[path]
    return f.type if isinstance(f.type, type) else {"int": int, "float": float, "bool": bool, "str": str}[f.type]


def coerce(path: str, value: Any) -> Any:
    """Convert a CLI / YAML value to the field's type, or raise a ConfigError naming it."""
    typ = field_type(path)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            s = str(value).lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            as_float = float(value)  # accepts 2e6
            if as_float != int(as_float):
                raise ValueError
            return int(as_float)
        if typ is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}={value!r} is not a valid {typ.__name__}") from None


def set_field(cfg: TrainConfig, path: str, value: Any) -> TrainConfig:
    """``cfg`` with the leaf at dotted ``path`` replaced by ``value`` (no validation)."""
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(cfg, **{head: value})
    return dataclasses.replace(cfg, **{head: set_field(getattr(cfg, head), rest, value)})


def preset_names() -> list[str]:
    """The presets ``preset=NAME`` loads: ``psjax/configs/NAME.yaml``, shipped with the package."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """Flat overrides from ``psjax/configs/NAME.yaml`` (nested YAML mappings become dotted keys)."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown preset {name!r}; allowed: {', '.join(preset_names())}")

    return flatten(yaml.safe_load(path.read_text()) or {})


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings (a YAML preset, ``to_dict``'s output) -> flat ``dotted.key -> value`` overrides."""
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(flatten(v, prefix + k + "."))
        else:
            flat[prefix + k] = v
    return flat


def build(overrides: dict[str, Any], learner: str) -> TrainConfig:
    """A TrainConfig from flat ``key -> value`` overrides for ``learner`` (its preset layered under them), every
    field coerced to its type and checked against its rules; no method knowledge (``psjax.config`` adds it)."""
    if learner not in LEARNERS:
        raise ConfigError(f"unknown learner {learner!r}; allowed: {', '.join(LEARNERS)}")
    cfg = TrainConfig()
    for layer in (LEARNER_PRESETS.get(learner, {}), {**overrides, "learner": learner}):
        for key, value in layer.items():
            path = resolve_key(key, learner)
            cfg = set_field(cfg, path, coerce(path, value))
    check_fields(cfg)
    return cfg


def precheck(overrides: dict[str, Any]) -> None:
    """Every key names a field and every value has its field's type and range, checked without the method
    registry (and so without JAX): the command line's first check. A bare learner key (``lr``) is read in
    the section of the learner given, else of any learner that has it."""
    learner = str(overrides.get("learner", ""))
    candidates = [learner] if learner in LEARNERS else list(LEARNERS)
    for key, value in overrides.items():
        if key in ("alg", "method", "learner") or str(key).startswith("sweep."):  # sweeps: psjax.sweep.parse
            continue
        paths = {}  # ordered: the value learners' section first, as for the default method
        for name in candidates:
            try:
                paths[resolve_key(key, name)] = None
            except ConfigError:
                pass
        if not paths:
            resolve_key(key, candidates[0])  # raises the error that names the key and the allowed ones
        for path in paths:
            check_rules(path, coerce(path, value), _LEAVES[path].metadata)


def burn_in_steps(q: QConfig) -> int:
    """The burn-in steps of a replay item: ``q.burn_in``, or for -1 min(8, a quarter of the item)."""
    return q.burn_in if q.burn_in >= 0 else min(DEFAULT_BURN_IN, q.rollout_len // 4)


def check_fields(cfg: TrainConfig) -> None:
    """Ranges, choices and the cross-field rules every method shares; ConfigError naming the bad value."""
    for path, f in _LEAVES.items():
        value = cfg
        for part in path.split("."):
            value = getattr(value, part)
        check_rules(path, value, f.metadata)
    q = cfg.q
    if cfg.is_value_based and not cfg.learner_kind.replay and q.num_envs % q.num_minibatches:
        raise ConfigError(f"q.num_minibatches={q.num_minibatches} must divide q.num_envs={q.num_envs} with "
                          "learner=pqn (minibatches are whole env trajectories); allowed: the divisors of num_envs")
    if cfg.learner_kind.replay and q.batch_size > q.buffer_size:
        raise ConfigError(f"q.batch_size={q.batch_size} exceeds q.buffer_size={q.buffer_size}")
    if cfg.learner_kind.replay and burn_in_steps(q) >= q.rollout_len:
        raise ConfigError(f"q.burn_in={q.burn_in} leaves no step of a {q.rollout_len}-step replay item in the loss; "
                          f"allowed: 0 .. {q.rollout_len - 1}")
    # devices against the program's rows (sweep points x seeds): psjax.config; parallel=envs: psjax.shard.data_mesh
    ac = cfg.ac
    if not cfg.is_value_based and ac.last_action and not ac.recurrent:
        raise ConfigError("ac.last_action=true needs ac.recurrent=true (a feed-forward actor has no memory to "
                          "carry the action in); allowed: ac.last_action=false, or ac.recurrent=true")
    if not cfg.is_value_based and ac.shared_torso and not ac.recurrent:
        raise ConfigError("ac.shared_torso=true needs ac.recurrent=true (the feed-forward actor and critic are "
                          "separate MLPs); allowed: ac.shared_torso=false, or ac.recurrent=true")
    if not cfg.is_value_based and ac.shared_torso and ac.central_critic:
        raise ConfigError("ac.shared_torso=true with ac.central_critic=true: a shared torso reads the actor's local "
                          "observations, a central critic the global state; allowed: one of them")
    if not cfg.is_value_based and ac.recurrent and ac.num_envs % ac.num_minibatches:
        raise ConfigError(
            f"ac.num_minibatches={ac.num_minibatches} must divide ac.num_envs={ac.num_envs} with ac.recurrent=true "
            "(recurrent minibatches are whole env trajectories); allowed: the divisors of num_envs"
        )
    if not cfg.is_value_based and (ac.num_envs * ac.rollout_len) % ac.num_minibatches:
        raise ConfigError(
            f"ac.num_minibatches={ac.num_minibatches} must divide num_envs*rollout_len="
            f"{ac.num_envs * ac.rollout_len}"
        )


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def field_info() -> list[tuple[str, Any, str, dict[str, Any]]]:
    """``(dotted.name, default, doc, rules)`` for every leaf field, in declaration order.

    ``rules`` holds the field's ``min`` / ``max`` / ``choices`` where it has them. Defaults are
    the dataclass defaults; a learner preset (``LEARNER_PRESETS``) may change some for its learner.
    """
    out = []
    for path, f in _LEAVES.items():
        rules = {k: v for k, v in f.metadata.items() if k in ("min", "max", "choices")}
        out.append((path, f.default, f.metadata.get("doc", ""), rules))
    return out
