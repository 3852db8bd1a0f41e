"""Command line: ``python -m psjax train key=value ...``, ``train resume=DIR``, ``fields``, ``compare``.

Arguments are parsed and every value checked against its field (``psjax.schema.precheck``) before JAX is
even imported; the method registry's checks (``psjax.config``) follow, before anything is compiled. A
mistake costs an error message and exit code 2, never a compilation.
"""

from __future__ import annotations

import json
import sys

from psjax.fields import ConfigError, UnknownFieldError
from psjax.schema import ALIASES, field_info, load_preset, precheck, preset_names

USAGE = """\
usage: python -m psjax train [preset=NAME] [key=value ...]   train a new run
       python -m psjax train resume=RUN_DIR [key=value ...]  continue a run from its newest intact checkpoint; keys:
                                                             learner fields that keep its shapes (q.lr, ...),
                                                             on_nonfinite, steps=N (larger: continue it to N)
       python -m psjax fields                                list every config key with its default
       python -m psjax methods                               list the registered methods and their learners
       python -m psjax methods matrix                        every method x env at its defaults: runs or why not
       python -m psjax compare RUN_DIR ... [out=DIR] [metric=return] [steps=N] [policy=greedy]
                                                             report (compare.png, compare.md) of run / sweep folders;
                                                             metric: auto (SMAX win rate, else return), win
                                                             (envs that define winning: SMAX, LBF), return;
                                                             steps: compare at N env steps per seed (longer runs cut);
                                                             policy: auto (each run's eval policy), greedy, sample
       python -m psjax compare-sweep [algs="fups nops seps"] [seeds=2] [steps=150000] [out=DIR] [key=value ...]
                                                             one run per method, then the report (psjax.compare);
                                                             again with the same out=: continues where it stopped
       python -m psjax reproduce                             list the papers' comparisons declared in psjax.reproduce
       python -m psjax reproduce NAME [seeds=N] [steps=N] [out=DIR] [key=value ...]
                                                             run one (resumable) into runs/reproduce-NAME/: its
                                                             compare report and verdict.md (psjax.reproduce)
       python -m psjax export RUN_DIR ... out=FILE.json [policy=auto] [algorithm=method]
                                                             run / sweep folders in marl-eval's JSON layout
                                                             (psjax.export); algorithm=folder names runs by folder

keys: any field from `fields` (e.g. q.lr, env.map) or its short form (lr, map, env, method);
values like 2e6 are accepted for integers. preset=NAME loads psjax/configs/NAME.yaml first.
"""


def parse_pairs(args: list[str]) -> dict[str, str]:
    """``["a=1", "b.c=x"] -> {"a": "1", "b.c": "x"}``; later keys win. ConfigError names a bad argument."""
    pairs = {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq or not key:
            raise ConfigError(f"argument {arg!r} is not key=value (see `python -m psjax fields`)")
        pairs[key] = value
    return pairs


def format_fields() -> str:
    """Every config field: ``name = default  doc [rules]``, then the short aliases."""
    from psjax import catalog  # noqa: F401  (the methods' own options are registered with them)

    info = field_info()
    width = max(len(f"{path} = {default!r}") for path, default, _, _ in info)
    lines = []
    for path, default, doc, rules in info:
        extra = []
        if "choices" in rules:
            extra.append("one of " + ", ".join(repr(c) for c in rules["choices"]))
        if "min" in rules:
            extra.append(f"min {rules['min']}")
        if "max" in rules:
            extra.append(f"max {rules['max']}")
        tail = f"  [{'; '.join(extra)}]" if extra else ""
        lines.append(f"{f'{path} = {default!r}':<{width}}  {doc}{tail}")
    lines.append("")
    lines.append("short forms: " + ", ".join(f"{k} -> {v}" for k, v in ALIASES.items())
                 + "; a bare learner key (lr, gamma, ...) goes to q.* or ac.* by the learner")
    lines.append("presets: preset=NAME loads psjax/configs/NAME.yaml (" + ", ".join(preset_names())
                 + "); the learner ppo changes some ac.* defaults")
    return "\n".join(lines)


def checked_before_jax(pairs: dict) -> None:
    """Every key and value checked against its field (``schema.precheck``) before JAX loads; a key no section
    knows may be a method's own option, registered with the method (whose module imports JAX): checked again
    after the methods are registered, so only those keys and the errors pay for the import."""
    try:
        precheck(pairs)
    except UnknownFieldError:
        from psjax import catalog  # noqa: F401

        precheck(pairs)


PROCESS_FIELDS = ("distributed", "coordinator", "num_processes", "process_id")  # may differ on resume


def _train_args(args: list[str]):
    """``(cfg, resume)`` from ``train``'s arguments, validated; raises ConfigError."""
    pairs = parse_pairs(args)
    resume = pairs.pop("resume", None)
    if resume is not None:
        process = {k: pairs.pop(k) for k in PROCESS_FIELDS if k in pairs}  # each process of a distributed run
        checked_before_jax(pairs)  # changed settings: psjax.resume.resume_changes says which a resumed run may take
        from psjax.config import load_run_config, make_config, to_dict
        from psjax.resume import RESUME_HOST_FIELDS
        from psjax.schema import flatten, resolve_key

        refused = [k for k in pairs if not (resolve_key(k, "qmix") in RESUME_HOST_FIELDS + ("steps",)
                                            or resolve_key(k, "qmix").startswith(("q.", "ac.")))]
        if refused:
            raise ConfigError(f"resume={resume} cannot change {', '.join(refused)}; allowed on resume: "
                              f"{', '.join(RESUME_HOST_FIELDS + PROCESS_FIELDS)}, a larger steps (continues the run) "
                              "and the learner's q.* / ac.* fields that keep the checkpoint's shapes and chunk plan "
                              "(e.g. q.lr)")
        cfg = load_run_config(resume)
        if not (process or pairs):
            return cfg, resume
        changed = {resolve_key(k, cfg.learner_name): v for k, v in pairs.items()}
        new = make_config({**flatten(to_dict(cfg)), **process, **changed})
        if "steps" in changed:  # given, it must continue the run (psjax.run.run: to N, as a run started with N)
            from psjax.resume import check_more_steps

            check_more_steps(cfg, new, resume)
        return new, resume
    preset = pairs.pop("preset", None)
    checked_before_jax({**(load_preset(preset) if preset else {}), **pairs})
    from psjax.config import make_config  # the method registry (JAX)

    return make_config(pairs, preset=preset), None


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad arguments or config, 3 stopped by non-finite values)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    try:
        if command == "fields":
            if rest:
                raise ConfigError(f"fields takes no arguments; got {' '.join(rest)}")
            print(format_fields())
            return 0
        if command == "methods":
            if rest not in ([], ["matrix"]):
                raise ConfigError(f"methods takes no argument or `matrix`; got {' '.join(rest)}")
            print(format_matrix() if rest else format_methods())
            return 0
        if command in ("compare", "compare-sweep"):
            return _compare_command(command, rest)
        if command == "export":
            return _export_command(rest)
        if command == "reproduce":
            return _reproduce_command(rest)
        if command != "train":
            raise ConfigError(f"unknown command {command!r}; allowed: train, fields, methods, compare, compare-sweep, "
                              "reproduce, export")
        cfg, resume = _train_args(rest)
        from psjax.run import NonFiniteError, run  # JAX is imported only once the config is known to be good

        try:
            run_dir = run(cfg, resume=resume)  # a resumed cfg is the folder's, with this process's fields and changes
        except NonFiniteError as e:  # on_nonfinite=stop: the run folder holds the logs up to it and a summary
            print(f"error: {e}", file=sys.stderr)
            return 3
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    from psjax.shard import is_primary

    if not is_primary():  # distributed=on: process 0 writes and reports
        print(f"run folder: {run_dir} (written by process 0)")
        return 0
    sweep_file = run_dir / "sweep.json"
    if not sweep_file.is_file():
        for line in final_eval_lines(json.loads((run_dir / "summary.json").read_text())):
            print(line)
        print(f"run folder: {run_dir}")
        return 0
    from psjax.compare import report  # a sweep: every point's final line, and the points compared

    for point in json.loads(sweep_file.read_text())["points"]:
        point_dir = run_dir / point["folder"]
        if (point_dir / "summary.json").is_file():
            for line in final_eval_lines(json.loads((point_dir / "summary.json").read_text())):
                print(f"[{point['label']}] {line}")
    if all((run_dir / point["folder"] / "summary.json").is_file()
           for point in json.loads(sweep_file.read_text())["points"]):
        out = report([run_dir], run_dir)
        print(f"points compared: {out['markdown']}, {out['png']}")
    print(f"run folder: {run_dir} (one run folder per point)")
    return 0


def format_methods() -> str:
    """Every registered method: name, default and allowed learners, agent indication, what it is."""
    from psjax import catalog, registry  # noqa: F401  (the built-in methods)

    rows = [registry.describe(registry.get(name)) for name in registry.names()]
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'alg':<{width}}  learner (allowed)                what it shares"]
    for r in rows:
        learners = f"{r['default_learner']} ({', '.join(r['learners'])})"
        extra = f"; agent_id=auto gives {r['agent_id']}" if r["agent_id"] != "none" else ""
        lines.append(f"{r['name']:<{width}}  {learners:<31}  {r['doc']}{extra}")
        for learner, values in r["defaults"].items():  # Method.defaults: applied where the user sets none
            settings = " ".join(f"{path}={value}" for path, value in values.items())
            lines.append(f"{'':<{width}}  with learner={learner}, unless set: {settings}")
        if r["fit_task"]:  # what it fits, shown on the default env
            lines.append(f"{'':<{width}}  fitted to the task, unless set: {_fitted_example(r)}")
    lines.append("A run's config.yaml names the fields its method set in method_defaults (the run's first line too).")
    return "\n".join(lines)


def _fitted_example(described: dict) -> str:
    """The fields a method's ``fit_task`` sets on the default env, with their values there."""
    from psjax.config import make_config, to_dict
    from psjax.schema import flatten

    try:
        cfg = make_config({"alg": described["name"]})
    except ConfigError as e:
        return f"(the default env is refused: {e})"
    flat, learner_defaults = flatten(to_dict(cfg)), described["defaults"].get(cfg.learner_name, {})
    shown = " ".join(f"{p}={flat[p]}" for p in cfg.method_defaults.split() if p not in learner_defaults)
    return f"{shown or 'nothing'} (env={cfg.env.name} at its defaults; another task gets its own)"


def format_matrix(cells: dict | None = None) -> str:
    """``psjax.config.method_env_matrix`` (or its ``cells``) as Markdown (docs/methods.md keeps it): a row per
    method, a column per env, each cell the learner the pair runs with at its defaults or "refuses", then every
    refusal's message."""
    from psjax.config import ENVS, method_env_matrix

    cells = cells or method_env_matrix()
    algs = list(dict.fromkeys(alg for alg, _ in cells))
    lines = ["| alg | " + " | ".join(ENVS) + " |", "|---|" + "---|" * len(ENVS)]
    for alg in algs:
        row = [cells[alg, env].removeprefix("runs: ") if cells[alg, env].startswith("runs: ") else "**refuses**"
               for env in ENVS]
        lines.append(f"| {alg} | " + " | ".join(row) + " |")
    refusals = [(key, cell.removeprefix("refuses: ")) for key, cell in cells.items() if cell.startswith("refuses: ")]
    if refusals:
        lines += ["", "Refusals (before anything is compiled):"]
        lines += [f"- `alg={alg} env={env}`: {message}" for (alg, env), message in refusals]
    return "\n".join(lines)


def _int_arg(pairs: dict, key: str, default: int | None) -> int | None:
    """Pop ``key`` from the pairs as an integer (``2e6`` accepted); ``default`` when it is absent."""
    if key not in pairs:
        return default
    value = pairs.pop(key)
    try:
        number = float(value)
        if number != int(number):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not an integer") from None
    return int(number)


def _compare_command(command: str, args: list[str]) -> int:
    """``compare RUN_DIR ... [out=DIR] [metric=auto|win|return] [steps=N] [policy=auto|greedy|sample]`` and
    ``compare-sweep [algs="..."] [seeds=] [steps=] [out=] [key=value]`` (``psjax.compare``,
    ``psjax.method_runs``).

    Raises ConfigError on bad arguments (``main`` turns it into exit code 2).
    """
    import pathlib
    import time

    from psjax.compare import report
    from psjax.method_runs import DEFAULT_METHODS, train_methods

    if command == "compare":
        folders = [a for a in args if "=" not in a]
        pairs = parse_pairs([a for a in args if "=" in a])
        out = pairs.pop("out", None)
        metric = pairs.pop("metric", "auto")
        policy = pairs.pop("policy", "auto")
        steps = _int_arg(pairs, "steps", None)
        if pairs:
            raise ConfigError(f"compare takes run folders, out=DIR, metric=auto|win|return, steps=N and "
                              f"policy=auto|greedy|sample; got {', '.join(pairs)}")
        if not folders:
            raise ConfigError("compare needs at least one run folder or sweep folder")
        if out is None:  # a single sweep folder gets its report inside it
            one = pathlib.Path(folders[0])
            out = one if len(folders) == 1 and not (one / "summary.json").exists() else \
                pathlib.Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
        result = report(folders, out, metric=metric, steps=steps, policy=policy)
    else:
        pairs = parse_pairs(args)
        algs = pairs.pop("algs", " ".join(DEFAULT_METHODS)).replace(",", " ").split()
        seeds, steps = _int_arg(pairs, "seeds", 2), _int_arg(pairs, "steps", 150_000)
        out = pairs.pop("out", None)
        result = train_methods(None, algs, seeds, steps, out, pairs)
    print(result["markdown"].read_text(), end="")
    print(f"figure: {result['png']}\ntable: {result['markdown']}")
    return 0


def _reproduce_command(args: list[str]) -> int:
    """``reproduce`` (the list) or ``reproduce NAME [seeds=N] [steps=N] [out=DIR] [key=value ...]``."""
    from psjax import reproduce

    names = [a for a in args if "=" not in a]
    if not names:
        print(reproduce.listing())
        return 0
    if len(names) > 1:
        raise ConfigError(f"reproduce takes one name; got {' '.join(names)}; allowed: "
                          f"{', '.join(reproduce.REPRODUCTIONS)}")
    reproduce.get(names[0])  # a bad name fails before anything else
    pairs = parse_pairs([a for a in args if "=" in a])
    seeds, steps = _int_arg(pairs, "seeds", None), _int_arg(pairs, "steps", None)
    result = reproduce.reproduce(names[0], seeds, steps, pairs.pop("out", None), pairs)
    print(result["verdict_md"].read_text(), end="")
    print(f"figure: {result['png']}\ntable: {result['markdown']}\nverdict: {result['verdict_md']}")
    return 0


def _export_command(args: list[str]) -> int:
    """``export RUN_DIR ... out=FILE.json [policy=auto|greedy|sample] [algorithm=method|folder]``."""
    from psjax.export import export

    folders = [a for a in args if "=" not in a]
    pairs = parse_pairs([a for a in args if "=" in a])
    out = pairs.pop("out", None)
    policy, algorithm = pairs.pop("policy", "auto"), pairs.pop("algorithm", "method")
    if pairs:
        raise ConfigError(f"export takes run folders, out=FILE.json, policy=auto|greedy|sample and "
                          f"algorithm=method|folder; got {', '.join(pairs)}")
    if not folders or out is None:
        raise ConfigError("export needs at least one run folder and out=FILE.json")
    print(f"marl-eval JSON: {export(folders, out, policy, algorithm)}")
    return 0


def final_eval_lines(summary: dict) -> list[str]:
    """One line per evaluated policy, naming it, e.g. ``final eval (sampled policy, 32 episodes per seed,
    mean of 2 seeds): return=0.91, length=12.3`` (the win rate only where the env has one)."""
    from psjax.evaluate import EVAL_STATS, POLICY_NAMES, eval_key  # only after training: JAX is loaded already

    final = summary["final_eval"]
    stats = [s for s in EVAL_STATS if s != "won" or summary.get("has_win")]
    event = summary.get("nonfinite")
    lines = []
    if event:  # the run went non-finite (on_nonfinite=warn, or the summary of a stopped run)
        seeds = event["seeds"]
        lines.append(f"WARNING: non-finite values from env step {event['env_step']:,} (iteration {event['iteration']}, "
                     f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}): {', '.join(event['quantities'])}")
    bad_eval = final.get("nonfinite_seeds")
    for policy in final["policies"]:
        values = {s: final["mean"].get(eval_key(s, policy)) for s in stats}
        shown = ", ".join(f"{s}={v:.4g}" for s, v in values.items() if v is not None)
        if bad_eval:
            shown += (f" -- NOT A RESULT: seed{'s' * (len(bad_eval) > 1)} {', '.join(map(str, bad_eval))} acted with "
                      "non-finite parameters")
        elif event:
            shown += " -- NOT A RESULT: the run went non-finite during training"
        lines.append(f"final eval ({POLICY_NAMES[policy]} policy, {final['episodes_per_seed']} episodes per seed, "
                     f"mean of {len(summary['seeds'])} seeds): {shown}")
    return lines
