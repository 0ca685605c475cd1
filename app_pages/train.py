"""Train: pick an architecture and its hyperparameters, check the cost, launch a job in a
worker process and watch it learn (progress, live curves, probe sentences). In a class the
form shows the instructor's limits, and only a run's owner (or the instructor) sees Stop."""

from __future__ import annotations

import streamlit as st

from app_pages import scoreboard, views
from app_pages.common import board, data_key, live_charts, me, run_store
from core import access, classroom, fast, jobs, paths, shapes
from core.config import (
    ARCHITECTURES,
    BEYOND_PRESETS,
    OPTIMIZERS,
    PRESETS,
    REPORTED_ACCURACY,
    ConfigError,
    TrainConfig,
    load_config,
    preset,
    preset_of,
    validate,
    validate_seeds,
)
from core.data import DataError, load_dataset
from core.guard import check_budget
from core.store import CANCELLED, COMPLETED, DIVERGED, RunNotFound

K = "train_"  # every session_state key of this page starts with it
DEFAULT_PROBES = ("A wonderful, moving film with a brilliant cast.\n"
                  "A boring waste of time: the plot was predictable and dull.\n"
                  "The acting was great but the ending was awful.")


@st.cache_data(show_spinner="Loading the reviews…")
def _sizes(imdb_data: str, cache: str) -> tuple[int, int]:
    ds = load_dataset()
    return len(ds.train), len(ds.test)


def _fill_preset(name: str) -> None:
    cfg = preset(name)
    for field, value in cfg.to_dict().items():
        st.session_state[K + field] = value
    st.session_state[K + "saved"] = {}


def _field(name: str) -> None:
    key, label, help_ = K + name, views.FIELD_LABELS[name], views.FIELD_HELP[name]
    kind = views.field_kind(name)
    if name == "optimizer":
        st.selectbox(label, OPTIMIZERS, key=key, help=help_)
    elif kind is bool:
        st.checkbox(label, key=key, help=help_)
    elif kind is int:  # no min/max here: core.config.validate names every bad value
        st.number_input(label, key=key, step=1, help=help_)
    else:
        step, fmt = views.FLOAT_INPUTS[name]
        st.number_input(label, key=key, step=step, format=fmt, help=help_)


def _poll_every(jobs_board, run) -> float | None:
    return views.live_poll_s(run.status, jobs_board.queue_position(run.id))


def _live(home: str, run_id: str, every: float | None) -> None:
    """One run's state, curves and probes; a fragment redrawn every ``every`` seconds.
    Everything comes from the server's one job board, shared by every watching tab."""
    jobs_board = board(home)
    try:
        run = jobs_board.run(run_id)
    except RunNotFound:
        st.warning("This run was deleted.")
        return
    if every is not None and _poll_every(jobs_board, run) != every:
        st.rerun()  # ended, or moved up the queue: redraw once in full to set the polling
    _live_header(home, run)
    frac, text = views.progress_view(run, jobs_board.queue_position(run.id),
                                     jobs_board.estimated_wait(run.id))
    st.progress(frac, text=text)
    _outcome(run)
    _live_curves(home, run)


def _live_header(home: str, run) -> None:
    """The run's name, architecture, owner, status and start, and Stop for who may."""
    arch = ARCHITECTURES.get(run.architecture, {}).get("label", run.architecture)
    store = run_store(home)
    actor = me(store)
    top, stop = st.columns([5, 1], vertical_alignment="bottom")
    top.subheader(f"Run: {views.md_escape(run.name)}")
    mine = " (you)" if actor.name and run.owner == actor.name else ""
    reused = f" · reused from `{run.reused_from}`" if run.reused_from else ""
    top.caption(f"{arch} · by **{views.md_escape(views.owner_of(run))}**{mine} · id `{run.id}` "
                f"· status **{run.status}** · started "
                f"{views.fmt_date(run.started_at or run.created_at)}{reused}")
    may_stop = access.can_manage(actor, run.owner, access.class_mode(store))
    if run.active and may_stop and stop.button(
            "Stop", key=K + "stop", icon=":material/stop_circle:",
            help="Stops at the next batch; a queued run is removed"):
        try:
            status = jobs.cancel(store, run.id, actor)
        except access.PermissionDenied as exc:
            st.error(views.md_escape(str(exc)))
        else:
            board(home).invalidate()
            st.toast(f"Stop requested (run is {status}).")


def _live_curves(home: str, run) -> None:
    """Batch curves and epoch curves, built once per server for every watching tab."""
    charts = live_charts(home).charts(run)
    if charts.batch_loss is None and charts.epoch_loss is None:
        st.caption("Curves appear with the first batches.")
        return
    if charts.batch_loss is not None:
        c1, c2 = st.columns(2)
        c1.vega_lite_chart(spec=charts.batch_loss, width="stretch")
        c2.vega_lite_chart(spec=charts.batch_accuracy, width="stretch")
    c3, c4 = st.columns(2)
    if charts.epoch_loss is None:
        c3.caption("Epoch curves appear at the end of the first epoch.")
    else:
        c3.vega_lite_chart(spec=charts.epoch_loss, width="stretch")
        c4.vega_lite_chart(spec=charts.epoch_accuracy, width="stretch")
    st.caption(f"{charts.batches_read:,} batches read; each line is drawn from at most "
               f"{views.MAX_POINTS} points (bins of {charts.bin_width} batches).")
    if run.probes:
        if charts.probes is None:
            st.caption("Probe sentences are scored before training and after every epoch.")
        else:
            st.vega_lite_chart(spec=charts.probes, width="stretch")


def _outcome(run) -> None:
    res = run.results or {}
    if run.status == COMPLETED:
        auc = res.get("auc")
        st.success(f"Completed: test accuracy {views.fmt_pct(res.get('test_accuracy'))}, "
                   f"AUC {'—' if auc is None else f'{auc:.4f}'}, trained in "
                   f"{views.fmt_seconds(res.get('train_seconds'))} "
                   f"(fast mode {'on' if res.get('fast') else 'off'}).",
                   icon=":material/check_circle:")
        pname = preset_of(run.config)
        if pname:
            st.caption(f"The tutorial reported {REPORTED_ACCURACY[pname]:.2f} % for this "
                       "model on the full IMDB test set.")
        c1, c2 = st.columns(2)
        c1.page_link("app_pages/compare.py", label="Compare runs", icon=":material/compare_arrows:")
        c2.page_link("app_pages/predict.py", label="Try it on your own reviews",
                     icon=":material/rate_review:", query_params={"run": run.id})
    elif run.status == CANCELLED:
        st.warning("Stopped on request. Curves show what was learned until then.",
                   icon=":material/stop_circle:")
    elif run.status == DIVERGED:
        at = res.get("diverged_at") or {}
        st.error(f"Diverged at epoch {at.get('epoch', '?')}, batch {at.get('batch', '?')}: the "
                 "loss became NaN or infinite. Try a smaller learning rate or set clipnorm "
                 "(clipped runs train with plain Keras fit: exact fast mode does not apply).",
                 icon=":material/warning:")
    elif not run.active:  # failed or interrupted
        st.error(f"The run {run.status}.", icon=":material/error:")
        if run.error:
            with st.expander("Details"):
                st.code(run.error, language=None)


def _limits_note(limits) -> None:
    """The instructor's limits, as the allowed ranges the form accepts."""
    if not limits or not (limits.caps or set(ARCHITECTURES) - set(limits.architectures)):
        return
    ranges = classroom.allowed_ranges(limits)
    parts = [f"{views.FIELD_LABELS[f]} {lo:,} to {hi:,}" for f, (lo, hi) in ranges.items()
             if f in limits.caps]
    archs = ", ".join(ARCHITECTURES[a]["label"] for a in limits.architectures)
    st.info("**Class limits** set by the instructor — architectures: "
            f"{views.md_escape(archs)}" + ("; " + "; ".join(parts) if parts else "") + ".",
            icon=":material/school:")


def render() -> None:
    """The page: the run being watched (if any), then the form for a new run."""
    st.title("Train a model")
    home = str(paths.lab_home())
    store = run_store(home)
    actor = me(store)
    limits = classroom.student_limits(store, actor)
    need_name = access.class_mode(store) and not actor.name
    try:
        n_train, n_test = _sizes(*data_key())
    except DataError as exc:
        st.error(str(exc))
        st.stop()
    _reattach(home, store, actor)

    st.header("New run")
    saved = _form_state()
    allowed = _presets(limits)
    left, right = st.columns([3, 2], gap="large")
    with left:
        shown = _form_fields(allowed)
    values = {f: st.session_state[K + f] for f in shown}
    saved.update(values, probes=st.session_state[K + "probes"])
    cfg = load_config(values)  # fields this architecture does not use keep their defaults
    errors = validate(cfg, n_train, n_test, limits)
    probes, probe_errors = views.parse_probes(st.session_state[K + "probes"])
    estimate = None
    if not errors:
        try:
            estimate = check_budget(cfg, n_train, n_test)
        except ConfigError as exc:
            errors += exc.errors
    with right:
        st.markdown("**Before launching**")
        _before_launch(cfg, errors, probe_errors, estimate, n_train, n_test)
        _launch(home, actor, cfg, probes, errors + probe_errors, need_name, (n_train, n_test))
        _reproduce(home, actor, cfg, probes, errors + probe_errors, need_name, (n_train, n_test))


def _reattach(home: str, store, actor) -> None:
    """The live view of ?run=ID, else of the visitor's newest active run (anyone's in a
    lab without a class), polled while it is queued or running."""
    jobs_board = board(home)
    run_id = st.query_params.get("run")
    if run_id and not store.exists(run_id):
        st.warning(f"No run with id {views.md_escape(run_id)} in this lab.")
        del st.query_params["run"]
        run_id = None
    if not run_id:  # the visitor's newest active run (anyone's in a lab without a class)
        active = [r for r in jobs_board.active() if (actor.name and r.owner == actor.name)
                  or not access.class_mode(store)]
        if active:
            run_id = max(active, key=lambda r: r.seq).id
            st.query_params["run"] = run_id
    if run_id:
        every = _poll_every(jobs_board, jobs_board.run(run_id))
        with st.container(border=True):
            st.fragment(run_every=every)(_live)(home, run_id, every)
        scoreboard.under_run(home, run_id)  # its seed group's scoreboard, if in one


def _form_state() -> dict:
    """The form's widget values, first filled from what this session last typed (kept
    across pages in ``saved``, returned) or the defaults."""
    saved = st.session_state.setdefault(K + "saved", {})
    for field, value in TrainConfig().to_dict().items():
        st.session_state.setdefault(K + field, saved.get(field, value))
    st.session_state.setdefault(K + "probes", saved.get("probes", DEFAULT_PROBES))
    return saved


def _presets(limits) -> list[str]:
    """The class limits and a button per allowed preset; returns the allowed
    architectures (the form's architecture is moved into them)."""
    _limits_note(limits)
    allowed = [a for a in ARCHITECTURES if not limits or a in limits.architectures]
    presets = [p for p in PRESETS if preset(p).architecture in allowed]
    if st.session_state[K + "architecture"] not in allowed:
        st.session_state[K + "architecture"] = allowed[0]
    st.caption("Start from one of the tutorial's models:")
    cols = st.columns(max(1, len(presets)))
    for col, name in zip(cols, presets):
        col.button(PRESETS[name]["name"], key=K + "preset_" + name, on_click=_fill_preset,
                   args=(name,), width="stretch",
                   help=f"Fills the form with the tutorial's {PRESETS[name]['name']} "
                        f"({REPORTED_ACCURACY[name]:.2f} % reported test accuracy)")
    beyond = [p for p in BEYOND_PRESETS if preset(p).architecture in allowed]
    if beyond:
        st.caption("… or from a bag-of-n-grams baseline (see README, Presets):")
        for col, name in zip(st.columns(max(1, len(beyond))), beyond):
            col.button(BEYOND_PRESETS[name]["name"], key=K + "preset_" + name,
                       on_click=_fill_preset, args=(name,), width="stretch",
                       help=f"Fills the form with the {name} preset (plain Keras fit).")
    return allowed


def _form_fields(allowed: list[str]) -> list[str]:
    """Architecture, its sections of fields, name and probes; returns the fields shown."""
    arch = st.selectbox("Architecture", allowed, key=K + "architecture",
                        format_func=lambda a: ARCHITECTURES[a]["label"])
    st.caption(ARCHITECTURES[arch]["help"])
    shown = ["architecture", "name"]
    for section, fields in views.form_sections(arch):
        st.markdown(f"**{section}**")
        grid = st.columns(3)
        for i, field in enumerate(fields):
            with grid[i % 3]:
                _field(field)
        shown += fields
    st.text_input(views.FIELD_LABELS["name"], key=K + "name", max_chars=80,
                  help=views.FIELD_HELP["name"], placeholder="automatic")
    st.text_area("Probe sentences (one per line, up to 8)", key=K + "probes", height=110,
                 help="Scored before training and after every epoch: watch the model "
                      "change its mind.")
    return shown


def _before_launch(cfg: TrainConfig, errors: list[str], probe_errors: list[str], estimate,
                   n_train: int, n_test: int) -> None:
    """What to fix, or the run's size, estimated time, fast mode and model summary."""
    if errors or probe_errors:
        st.error("Fix these before launching:\n\n" + "\n".join(
            f"- {views.md_escape(e)}" for e in errors + probe_errors),
            icon=":material/error:")
    if errors:
        return
    n = cfg.train_size or n_train
    n_val = int(round(n * cfg.validation_split))
    m1, m2 = st.columns(2)
    m1.metric("Parameters", f"{shapes.count_params(cfg):,}")
    m2.metric("Estimated time", views.fmt_seconds(estimate.seconds),
              help=(f"At {estimate.speed} speed"
                    + (" (the native kernels run each review's own "
                       f"~{estimate.steps_per_review:.0f} steps)" if estimate.fast
                       else " (every padded step)")
                    + ", calibrated on the 2-core build machine under load; "
                      "other jobs on the server make it slower, a quiet server faster."))
    st.caption(f"Trains on {n - n_val:,} reviews, validates on {n_val:,}, tests on "
               f"{cfg.test_size or n_test:,}; {estimate.describe()}.")
    use_fast, reason = fast.applies(cfg)
    st.caption(f"Fast mode: **{'on' if use_fast else 'off'}** — "
               f"{views.md_escape(reason)}")
    pname = preset_of(cfg)
    if pname:
        st.caption(f"This is the tutorial's {PRESETS[pname]['name']}: it reported "
                   f"{REPORTED_ACCURACY[pname]:.2f} % test accuracy.")
    with st.expander("Model summary"):
        st.code(shapes.summary(cfg), language=None)


def _launch(home: str, actor, cfg: TrainConfig, probes: list[str], errors: list[str],
            need_name: bool, sizes: tuple[int, int]) -> None:
    """The nickname reminder and the Launch button; a launch submits the job and shows it."""
    if need_name:
        st.warning("Pick a nickname in the sidebar to train in this class.",
                   icon=":material/badge:")
    launch = st.button("Launch training", key=K + "launch", type="primary",
                       icon=":material/play_arrow:",
                       disabled=bool(errors or need_name), width="stretch")
    if launch and not (errors or need_name):
        try:
            new_id = jobs.submit(run_store(home), cfg, probes, *sizes, actor=actor)
        except ConfigError as exc:
            st.error("\n".join(f"- {views.md_escape(e)}" for e in exc.errors))
        else:
            board(home).invalidate()
            st.query_params["run"] = new_id
            st.rerun()


def _reproduce(home: str, actor, cfg: TrainConfig, probes: list[str], errors: list[str],
               need_name: bool, sizes: tuple[int, int]) -> None:
    """Reproduce over N seeds: this configuration queued N times as one group, seeds
    cfg.seed .. cfg.seed + N - 1, under the same rules as Launch; the scoreboard under the
    run then shows the spread across seeds."""
    left, right = st.columns([1, 2], vertical_alignment="bottom")
    n = left.number_input("Seeds", key=K + "seeds", value=3, step=1,
                          help="How many runs: the same settings, consecutive seeds from "
                               "the form's. Each one counts toward your queued runs in a "
                               "class.")
    seed_errors = validate_seeds(cfg.seed, n)
    if seed_errors:
        st.error("\n".join(f"- {views.md_escape(e)}" for e in seed_errors))
    go = right.button(f"Reproduce over {n} seeds", key=K + "reproduce",
                      icon=":material/stacks:", disabled=bool(errors or seed_errors or need_name),
                      width="stretch", help=f"Queues {n} runs of this configuration (seeds "
                      f"{cfg.seed} to {cfg.seed + n - 1}) as one group; a scoreboard shows their "
                      "mean ± std per epoch and each seed's test accuracy.")
    if go and not (errors or seed_errors or need_name):
        try:
            ids = jobs.submit_group(run_store(home), cfg, n, probes, *sizes, actor=actor)
        except ConfigError as exc:
            st.error("\n".join(f"- {views.md_escape(e)}" for e in exc.errors))
        else:
            board(home).invalidate()
            st.query_params["run"] = ids[0]
            st.rerun()


render()
