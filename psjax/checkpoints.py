"""Orbax checkpoints of the vmapped runner and the host loop's state (``checkpoints/<chunk>/``): writing, reading
the newest one that reads back, and saying why one does not (damaged, or another psjax's layout)."""

from __future__ import annotations

import functools
import pathlib
import sys
from typing import Any, NamedTuple

import jax
import numpy as np

from psjax.config import ConfigError


def open_manager(run_dir: pathlib.Path, create: bool):
    import orbax.checkpoint as ocp  # slow import, only when checkpoints are used

    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=create)
    return ocp.CheckpointManager((run_dir / "checkpoints").resolve(), options=options)


def save_checkpoint(manager, chunk: int, runner, host: dict) -> None:
    """Checkpoint after ``chunk`` chunks: the vmapped runner and the host loop's state."""
    import orbax.checkpoint as ocp

    args = ocp.args.Composite(runner=ocp.args.StandardSave(runner), host=ocp.args.JsonSave(host))
    manager.save(chunk, args=args)


@functools.lru_cache(maxsize=1)
def psjax_version() -> str:
    """This psjax's version as checkpoints and summary.json record it: the package's version, plus ``+g<commit>``
    when it runs from a git checkout (uncommitted changes are not told apart)."""
    import subprocess
    from importlib import metadata

    try:
        version = metadata.version("psjax")
    except metadata.PackageNotFoundError:
        version = "unknown"
    root = pathlib.Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        try:  # read-only: never touches the index
            out = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True,
                                 text=True, timeout=10)
            version += f"+g{out.stdout.strip()}" if out.returncode == 0 and out.stdout.strip() else ""
        except (OSError, subprocess.SubprocessError):
            pass
    return version


class Restored(NamedTuple):
    """A checkpoint read back (``restore_checkpoint``)."""

    runner: Any
    host: dict  # chunk (chunks completed), iteration, seeds, eval_key_base, psjax_version (since 2026-12-07)
    step: int  # the checkpoint's step (= host["chunk"])
    skipped: list[tuple[int, str]]  # newer checkpoints that did not read back, (step, why), newest first


def restore_checkpoint(run_dir, abstract_runner, step: int | None = None) -> Restored:
    """The newest checkpoint of a run folder that reads back (only ``step`` if given).

    ``abstract_runner``: the vmapped runner's structure, e.g.
    ``jax.eval_shape(jax.vmap(program.init), seed_keys(cfg.seed, cfg.seeds))``. A checkpoint that does not read
    back is either damaged (orbax's stored array tree matches ``abstract_runner`` or cannot be read, yet the arrays
    do not restore: files cut short, overwritten or missing) or of another layout (the stored tree differs:
    another psjax version, an edited config.yaml). Newer ones that fail are skipped and named in ``skipped``; when
    none reads back, a ConfigError says which of the two it is, naming each checkpoint's error.
    """
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / "checkpoints").is_dir():
        raise ConfigError(f"{run_dir} has no checkpoints/ to resume from")
    manager = open_manager(run_dir, create=False)
    failures = []  # (step, "damaged" | "layout", why, the psjax version its host state names)
    try:
        steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
        if not steps:
            raise ConfigError(f"{run_dir / 'checkpoints'} holds no complete checkpoint")
        for s in steps:
            try:
                out = _restore(manager, s, abstract_runner)
            except (ValueError, KeyError, OSError) as error:  # orbax / tensorstore / json: file or layout trouble
                failures.append((s, *_diagnose(manager, s, abstract_runner, error)))
                continue
            return Restored(out["runner"], out["host"], s, [(f[0], f[2]) for f in failures])
    finally:
        manager.close()
    raise _layout_error(run_dir, failures)


def load_checkpoint(run_dir, abstract_runner, step: int | None = None) -> tuple[Any, dict]:
    """The runner and host state of ``restore_checkpoint`` (the newest checkpoint that reads back unless ``step``);
    a damaged newer one skipped is named in a ``WARNING:`` line on stderr."""
    restored = restore_checkpoint(run_dir, abstract_runner, step)
    for s, why in restored.skipped:
        print(f"WARNING: {pathlib.Path(run_dir) / 'checkpoints' / str(s)} {why}; read checkpoint {restored.step} "
              "instead", file=sys.stderr)
    return restored.runner, restored.host


def _restore(manager, step: int, abstract_runner) -> dict:
    """``{"runner", "host"}`` of checkpoint ``step``. A checkpoint written before a runner field that holds no
    arrays existed (``Runner.point``, added with sweeps; ``{}`` outside one) lacks it, which orbax refuses as a
    structure mismatch: such fields are then restored as the abstract runner has them, so older runs resume."""
    import orbax.checkpoint as ocp

    def restore(item):
        return manager.restore(step, args=ocp.args.Composite(runner=ocp.args.StandardRestore(item),
                                                             host=ocp.args.JsonRestore()))

    try:
        return restore(abstract_runner)
    except ValueError as error:
        fields = getattr(abstract_runner, "_fields", ())
        empty = [f for f in fields if not jax.tree.leaves(getattr(abstract_runner, f))]
        if not empty:
            raise
        try:
            out = restore({f: getattr(abstract_runner, f) for f in fields if f not in empty})
        except ValueError:
            raise error from None
        runner = type(abstract_runner)(**out["runner"], **{f: getattr(abstract_runner, f) for f in empty})
        return {"runner": runner, "host": out["host"]}


def _layout(tree) -> dict[tuple[str, ...], tuple[int, ...]]:
    """``{key path: shape}`` of a tree's arrays, keys as plain strings (a NamedTuple field, a dict key and orbax's
    stored dict key of the same field compare equal)."""
    def name(k):
        return str(next((getattr(k, a) for a in ("key", "name", "idx") if hasattr(k, a)), k))

    return {tuple(map(name, path)): tuple(getattr(leaf, "shape", ()))
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _diagnose(manager, step: int, abstract_runner, error: Exception) -> tuple[str, str, str | None]:
    """Why checkpoint ``step`` did not restore: ``("layout" | "damaged", one line, its psjax version or None)``.
    Layout: orbax's stored array tree (``runner/_METADATA`` and the arrays' headers) reads back and differs from
    ``abstract_runner``; damaged: it reads back equal (the array data is what failed) or cannot be read at all."""
    import orbax.checkpoint as ocp

    try:
        host = manager.restore(step, args=ocp.args.Composite(host=ocp.args.JsonRestore()))["host"]
        version = host.get("psjax_version")
    except Exception:  # noqa: BLE001 - a damaged host state only means no version to name
        version = None
    try:
        stored = _layout(getattr(m := ocp.StandardCheckpointHandler().metadata(
            pathlib.Path(manager.directory) / str(step) / "runner"), "tree", m))
    except Exception:  # noqa: BLE001 - unreadable metadata is damage, whatever orbax raises
        stored = None
    built = _layout(abstract_runner)
    if stored is None or stored == built:
        text = " ".join(f"{type(error).__name__}: {error}".split())
        return "damaged", f"is damaged ({text[:300]})", version
    diffs = [f"{'.'.join(p)}: stored {stored.get(p, 'nothing')}, built {built.get(p, 'nothing')}"
             for p in sorted(stored.keys() | built.keys()) if stored.get(p) != built.get(p)]
    more = f"; {len(diffs) - 1} more" if len(diffs) > 1 else ""
    return "layout", f"holds other arrays than this psjax builds from the run's config ({diffs[0]}{more})", version


def _layout_error(run_dir: pathlib.Path, failures: list[tuple[int, str, str, str | None]]) -> ConfigError:
    """No checkpoint read back (``failures``: ``(step, kind, why, version)``, newest first): every one of another
    layout -> the version message (naming the versions); otherwise the checkpoints are damaged."""
    where = run_dir / "checkpoints"
    each = "; ".join(f"checkpoint {s} {why}" for s, _, why, _ in failures)
    if any(kind == "damaged" for _, kind, _, _ in failures):
        return ConfigError(f"the checkpoints in {where} are damaged, none can be resumed: {each}. The run's logs "
                           "and evaluations up to them stay readable; train it again to finish it")
    versions = sorted({v or "a psjax that did not record its version (before 2026-12-07)" for *_, v in failures})
    written = " and ".join(versions)
    cause = (f"it was written by another psjax version ({written}; this is {psjax_version()})"
             if psjax_version() not in versions else
             f"it was written by this psjax version ({written}), so the run's config.yaml or psjax's code changed "
             "since without a version change")
    return ConfigError(
        f"the checkpoint's arrays do not match what this psjax trains from the run's config: {cause} (for example "
        "one whose Q learners' replay items kept a final observation for every step, before 2026-12-02) and cannot "
        f"be resumed by this one; the run's logs and evaluations stay readable, train it again to finish it. {each}")


def host_state(chunk: int, iteration: int, seeds: list[int], eval_base: np.ndarray) -> dict:
    """What the host loop needs besides the runner to continue exactly where it stopped."""
    return {"chunk": chunk, "iteration": iteration, "seeds": seeds, "eval_key_base": eval_base.tolist(),
            "psjax_version": psjax_version()}
