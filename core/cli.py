"""Command line: ``python -m core {train,runs,predict,reproduce,data,cancel,rename,delete}``.

Every error prints one line starting with ``error:`` and exits non-zero (2 for bad input,
1 for a run that did not complete). Who acts: ``LAB_USER=nickname`` (runs are theirs; caps
and permissions apply) and, for the instructor, ``LAB_INSTRUCTOR_KEY`` (core/access.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence

from core import access, fmt, groups, jobs
from core.config import (
    ALL_PRESETS,
    PRESETS,
    REPORTED_ACCURACY,
    ConfigError,
    TrainConfig,
    load_config,
    parse_overrides,
    preset,
    validate_seeds,
)
from core.data import DataError, load_dataset, split_sizes
from core.identity import IdentityError
from core.predict import PredictError
from core.store import COMPLETED, DIVERGED, QUEUED, Run, RunNotFound, RunStore

# `train` following a run: it reads the run's row this often (one primary-key read), so it
# returns this soon after the run ends; it shows progress every SHOW_S on a terminal and
# every PIPE_SHOW_S into a pipe or file, and dispatches every DISPATCH_S.
WAKE_S = 0.25
SHOW_S = 0.5
PIPE_SHOW_S = 5.0
DISPATCH_S = 5.0


class CliError(Exception):
    """Printed as one line, exit 2."""


def _fmt_s(seconds: float | None) -> str:
    return fmt.seconds_compact(seconds)


def _pct(x: float | None) -> str:
    return fmt.pct(x, missing=fmt.CLI_MISSING)


def build_config(preset_name: str | None, overrides: Sequence[str], config_file: str | None
                 ) -> TrainConfig:
    values: dict = {}
    if config_file:
        try:
            with open(config_file, encoding="utf-8") as fh:
                values.update(json.load(fh))
        except (OSError, json.JSONDecodeError) as exc:
            raise CliError(f"cannot read config file {config_file}: {exc}") from exc
    values.update(parse_overrides(list(overrides)))
    base = preset(preset_name) if preset_name else None
    return load_config(values, base)


def _progress_line(store: RunStore, run: Run, seen: dict) -> str:
    """The progress line for ``run``; ``seen`` keeps the last batch metrics read."""
    for row in store.metrics(run.id, phase="batch", after_id=seen["last_id"]):
        seen["last_id"] = row["id"]
        if row["name"] in ("loss", "accuracy"):
            seen[row["name"]] = row["value"]
    loss, acc, p = seen["loss"], seen["accuracy"], run.progress
    if run.status == QUEUED:
        return f"queued (position {store.queue_position(run.id)})"
    if p.get("stage") == "training" and p.get("total"):
        width = 28
        frac = p.get("done", 0) / p["total"]
        bar = "#" * int(width * frac) + "." * (width - int(width * frac))
        return (f"[{bar}] {100 * frac:5.1f}% epoch {p.get('epoch', 0) + 1}/{p.get('epochs')}"
                f" batch {p.get('batch', 0)}/{p.get('steps_per_epoch')}"
                f" loss {loss if loss is None else f'{loss:.4f}'}"
                f" acc {acc if acc is None else f'{acc:.3f}'}"
                f" ETA {_fmt_s(p.get('eta_s'))}")
    return f"{run.status}: {p.get('stage', '')}"


def follow(store: RunStore, run_id: str, out=sys.stderr) -> Run:
    """Print a live progress line until the run ends; Ctrl-C cancels it.

    Every WAKE_S it reads the run's row alone, so it returns within WAKE_S of the run's
    end; the progress line (and the new batch metrics under it) every SHOW_S on a terminal,
    every PIPE_SHOW_S into a pipe or file; a dispatch every DISPATCH_S."""
    seen = {"last_id": 0, "loss": None, "accuracy": None}
    tty = out.isatty()
    show_next = dispatch_next = 0.0
    try:
        while True:
            now = time.monotonic()
            if now >= dispatch_next:
                jobs.dispatch(store)  # a dead worker's slot goes to the next queued run
                dispatch_next = now + DISPATCH_S
            run = store.get(run_id, reap=False)
            if run.active and now < show_next:
                time.sleep(WAKE_S)
                continue
            line = _progress_line(store, run, seen)
            out.write("\r" + line[:120].ljust(120) if tty else line + "\n")
            out.flush()
            if not run.active:
                if tty:
                    out.write("\n")
                return run
            show_next = now + (SHOW_S if tty else PIPE_SHOW_S)
            time.sleep(WAKE_S)
    except KeyboardInterrupt:
        jobs.cancel(store, run_id, access.cli_actor(store))
        out.write("\ncancelling...\n")
        while store.get(run_id).active:
            time.sleep(WAKE_S)
        return store.get(run_id)


def _data_sizes() -> tuple[int, int]:
    """Reviews per split, for submit's checks: from the data cache's labels alone."""
    return split_sizes()


def submit(store: RunStore, cfg: TrainConfig, probes: Sequence[str] = (),
           group: tuple[str, str] | None = None) -> str:
    """``group``: (id, label) of the seed group the run joins (``reproduce``)."""
    n_train, n_test = _data_sizes()
    group_id, group_label = group or (None, None)
    run_id = jobs.submit(store, cfg, probes, n_train=n_train, n_test=n_test,
                         actor=access.cli_actor(store), group_id=group_id,
                         group_label=group_label)
    print(f"run {run_id} submitted ({cfg.display_name()})", file=sys.stderr)
    return run_id


def train_and_follow(store: RunStore, cfg: TrainConfig, probes: Sequence[str] = (),
                     quiet: bool = False, group: tuple[str, str] | None = None) -> Run:
    run_id = submit(store, cfg, probes, group)
    return follow(store, run_id, out=sys.stderr if not quiet else _Null())


class _Null:
    def write(self, _s: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def cmd_train(args: argparse.Namespace, store: RunStore) -> int:
    cfg = build_config(args.preset, args.set or [], args.config)
    if args.detach:
        print(submit(store, cfg, args.probe or []))
        return 0
    run = train_and_follow(store, cfg, args.probe or [])
    r = run.results
    print(f"run {run.id}: {run.status}; test accuracy {_pct(r.get('test_accuracy'))}; "
          f"AUC {r.get('auc', float('nan')):.4f}; training {_fmt_s(r.get('train_seconds'))} "
          f"(fast mode: {'on' if r.get('fast') else 'off'})")
    if run.status == DIVERGED:
        print(f"diverged at {r.get('diverged_at')}", file=sys.stderr)
    if run.error:
        print(run.error.strip().splitlines()[-1], file=sys.stderr)
    return 0 if run.status == COMPLETED else 1


def _run_row(run: Run, queue: list[str]) -> dict:
    r = run.results
    return {"id": run.id, "name": run.name, "owner": run.owner, "architecture": run.architecture,
            "status": run.status,
            "queue_position": queue.index(run.id) + 1 if run.id in queue else None,
            "started_at": run.started_at, "reused_from": run.reused_from,
            "group_id": run.group_id,
            "epochs": run.config.epochs, "params": r.get("params"),
            "best_val_accuracy": r.get("best_val_accuracy"),
            "test_accuracy": r.get("test_accuracy"), "auc": r.get("auc"),
            "train_seconds": r.get("train_seconds"), "fast": r.get("fast"),
            "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created_at))}


def cmd_runs(args: argparse.Namespace, store: RunStore) -> int:
    jobs.dispatch(store)  # reaps dead workers, and their slots go to the next queued runs
    runs = store.list_runs(reap=False)
    queue = store.queue_order()
    rows = [_run_row(run, queue) for run in runs]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no runs yet: try `python -m core train --preset seed-lstm`")
        return 0
    print(f"{'id':<23} {'status':<11} {'owner':<14} {'architecture':<17} {'ep':>3} "
          f"{'test acc':>9} {'time':>7}  name")
    for r in rows:
        status = r["status"] + (f" #{r['queue_position']}" if r["queue_position"] else "")
        print(f"{r['id']:<23} {status:<11} {access.owner_label(r['owner']):<14} "
              f"{r['architecture']:<17} {r['epochs']:>3} {_pct(r['test_accuracy']):>9} "
              f"{_fmt_s(r['train_seconds']):>7}  {r['name']}")
    return 0


def cmd_predict(args: argparse.Namespace, store: RunStore) -> int:
    from core.predict import Predictor

    pred = Predictor.load(store, args.run_id).predict_one(args.text)
    if args.json:
        print(json.dumps({"run": args.run_id, **pred.as_dict()}))
    if pred.error:
        if not args.json:
            print(f"error: {pred.error}", file=sys.stderr)
        return 2
    if not args.json:
        for w in pred.warnings:
            print(f"note: {w}", file=sys.stderr)
        print(f"{pred.probability:.4f} {pred.label}")
    return 0


def cmd_data(args: argparse.Namespace, store: RunStore) -> int:
    ds = load_dataset()
    s = ds.summary()
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"source: {s['label']}" + (f" [{s['path']}]" if s["path"] else ""))
    print(f"why:    {s['reason']}")
    print(f"vocabulary: {s['vocabulary']:,} distinct training words")
    for name in ("train", "test"):
        d = s[name]
        print(f"{name:<5}: {d['reviews']:,} reviews ({d['positive']:,} positive, "
              f"{d['negative']:,} negative); words per review mean {d['mean_words']:.1f}, "
              f"median {d['median_words']:.0f}, p90 {d['p90_words']:.0f}, max {d['max_words']:,}")
    if ds.source.is_demo:
        print("note: this is the DEMO set. Set IMDB_DATA=/path/to/aclImdb_v1.tar.gz for IMDB.")
    return 0


def cmd_cancel(args: argparse.Namespace, store: RunStore) -> int:
    print(f"run {args.run_id}: {jobs.cancel(store, args.run_id, access.cli_actor(store))}")
    return 0


def cmd_rename(args: argparse.Namespace, store: RunStore) -> int:
    store.rename(args.run_id, args.name, access.cli_actor(store))
    print(f"run {args.run_id}: renamed to {args.name.strip()}")
    return 0


def cmd_delete(args: argparse.Namespace, store: RunStore) -> int:
    store.delete(args.run_id, access.cli_actor(store))
    print(f"run {args.run_id}: deleted")
    return 0


def reproduce_table(results: dict[str, list[Run]]) -> str:
    """Markdown table: mean and spread of test accuracy per preset, beside the tutorial."""
    lines = ["| model | runs | test acc mean | min – max | std | per-seed | tutorial | "
             "epoch time mean |",
             "|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        acc = groups.accuracy_stats(runs)
        times = [t for r in runs for t in r.results.get("epoch_seconds", [])]
        per = ", ".join(f"s{r.config.seed}: " + (f"{100 * r.results['test_accuracy']:.2f}"
                                                  if r.status == COMPLETED else r.status)
                        for r in runs)
        if acc["done"]:
            lines.append(f"| {name} | {acc['done']}/{len(runs)} | {acc['mean']:.2f} % | "
                         f"{acc['min']:.2f} – {acc['max']:.2f} % | {acc['std']:.2f} | {per} | "
                         f"{REPORTED_ACCURACY[name]:.2f} % | "
                         f"{statistics.mean(times) if times else float('nan'):.1f} s |")
        else:
            lines.append(f"| {name} | 0/{len(runs)} | -- | -- | -- | {per} | "
                         f"{REPORTED_ACCURACY[name]:.2f} % | -- |")
    return "\n".join(lines)


def epochs_table(store: RunStore, results: dict[str, list[Run]]) -> str:
    """Per run, accuracy after every epoch: a collapse in a later epoch shows here."""
    lines = ["| run | train accuracy by epoch | val accuracy by epoch | test acc | AUC |",
             "|---|---|---|---|---|"]
    for runs in results.values():
        for run in runs:
            by = {"train": [], "val": []}
            for phase in by:
                by[phase] = [f"{100 * m['value']:.2f}" for m in store.metrics(run.id, phase)
                             if m["name"] == "accuracy" and m["value"] is not None]
            r = run.results
            lines.append(f"| {run.name} | {' → '.join(by['train']) or '--'} | "
                         f"{' → '.join(by['val']) or '--'} | {_pct(r.get('test_accuracy'))} | "
                         f"{r.get('auc', float('nan')):.4f} |")
    return "\n".join(lines)


def cmd_reproduce(args: argparse.Namespace, store: RunStore) -> int:
    """Each preset's seeds train one after the other as one seed group (core/groups.py), so
    the dashboard's scoreboard shows them; a single seed (``--seeds 1``) is no group."""
    t0 = time.monotonic()
    results: dict[str, list[Run]] = {}
    overrides = parse_overrides(args.set or [])
    if args.seeds != 1 and (errors := validate_seeds(args.first_seed, args.seeds)):
        raise ConfigError(errors)
    for name in args.presets or list(PRESETS):
        base = load_config({**overrides, "seed": args.first_seed}, preset(name))
        base.name = f"{PRESETS[name]['name']} (reproduce)"
        group = ((groups.new_group_id(), groups.label(base, args.seeds))
                 if args.seeds > 1 else None)
        for cfg in groups.members(base, args.seeds):
            cfg.name = f"{PRESETS[name]['name']} (reproduce, seed {cfg.seed})"
            run = train_and_follow(store, cfg, quiet=not sys.stderr.isatty(), group=group)
            acc = run.results.get("test_accuracy")
            print(f"{name} seed {cfg.seed}: {run.status}, test accuracy {_pct(acc)}, "
                  f"epochs {[round(t, 1) for t in run.results.get('epoch_seconds', [])]} s",
                  file=sys.stderr, flush=True)
            results.setdefault(name, []).append(run)
    table = reproduce_table(results)
    total = time.monotonic() - t0
    print(table)
    print("\n" + epochs_table(store, results))
    print(f"\nwall time: {_fmt_s(total)} ({total:.0f} s) for {sum(map(len, results.values()))} runs; "
          f"overrides: {overrides or 'none'}")
    ok = all(r.status == COMPLETED for runs in results.values() for r in runs)
    return 0 if ok else 1


def cmd_native(args: argparse.Namespace, store: RunStore) -> int:
    """Build (first time) and load the native LSTM kernels; say which loops fast mode uses.
    Exit 0 either way: without them fast mode runs its XLA loops (slower, same results)."""
    from core import native

    t0 = time.monotonic()
    line = native.status()
    print(f"{line} ({time.monotonic() - t0:.1f} s)" if native.enabled() else line)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core", description="LSTM Sentiment Lab engine")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model in the foreground (Ctrl-C cancels)")
    t.add_argument("--preset", choices=list(ALL_PRESETS))
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting")
    t.add_argument("--config", help="JSON file of settings")
    t.add_argument("--probe", action="append", help="a sentence re-scored every epoch")
    t.add_argument("--detach", action="store_true",
                   help="submit, print the run id and return without waiting")
    r = sub.add_parser("runs", help="list runs")
    r.add_argument("--json", action="store_true")
    pr = sub.add_parser("predict", help="score a review with a finished run")
    pr.add_argument("run_id")
    pr.add_argument("text")
    pr.add_argument("--json", action="store_true")
    rp = sub.add_parser("reproduce", help="train the three seed presets, table vs the tutorial")
    rp.add_argument("--seeds", type=int, default=3,
                    help="seeds per preset (1, or a group of 2 to 10)")
    rp.add_argument("--first-seed", type=int, default=7)
    rp.add_argument("--presets", nargs="*", choices=list(PRESETS))
    rp.add_argument("--set", action="append", metavar="KEY=VALUE")
    d = sub.add_parser("data", help="which data source is in use, counts, lengths")
    d.add_argument("--json", action="store_true")
    c = sub.add_parser("cancel", help="stop a queued or running run")
    c.add_argument("run_id")
    rn = sub.add_parser("rename", help="rename a run (its owner or the instructor)")
    rn.add_argument("run_id")
    rn.add_argument("name")
    de = sub.add_parser("delete", help="delete a finished run (its owner or the instructor)")
    de.add_argument("run_id")
    sub.add_parser("native", help="build/load the native LSTM kernels fast mode uses")
    return p


COMMANDS = {"train": cmd_train, "runs": cmd_runs, "predict": cmd_predict,
            "reproduce": cmd_reproduce, "data": cmd_data, "cancel": cmd_cancel,
            "native": cmd_native, "rename": cmd_rename, "delete": cmd_delete}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        store = RunStore()
        return COMMANDS[args.command](args, store)
    except ConfigError as exc:
        print(f"error: invalid configuration: {'; '.join(exc.errors)}", file=sys.stderr)
    except (CliError, DataError, PredictError, RunNotFound, IdentityError,
            access.PermissionDenied) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except ValueError as exc:  # a bad new name, deleting an active run
        print(f"error: {exc}", file=sys.stderr)
    return 2
