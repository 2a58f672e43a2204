"""`ModalBackend`: the few calls that talk to Modal, behind the builder's pure translation.

`up` = preflight (token, secrets) -> deploy the app if its hash changed -> mint the run
token into the token store -> build the image layer by layer -> create the sandbox ->
record the run -> ensure the one syncer. The agent is the sandbox's own command, so `events`
and `logs` read the sandbox's stdout/stderr (from the start; what a V2 sandbox no longer
keeps is replayed from the run's event log) and `send` writes its stdin (a one-shot task is
its first line).

The end of a run (`stop`, or `finish` once the sandbox ended by itself): one final metric
sync (the app's `sync_now`, after the sandbox's last commit), the run token revoked, the
proxy's usage written into the run's result.json (the app's `finalize_run`) and the registry.
The run folder keeps the registry entry too (run.json): the registry Dict is an index.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_agent.backends.modal import builder
from ml_agent.backends.modal.errors import modal_errors
from ml_agent.backends.modal.stdio import (
    read_lines,
    set_stdin_position,
    stdin_position,
    write_stdin,
)
from ml_agent.backends.modal.stores import (
    KEY_REFUSED,
    AppState,
    ModalTokenStore,
    ModalUsageSink,
    RunRegistry,
)
from ml_agent.contracts import (
    RunRecord,
    TokenRecord,
    hash_token,
    mint_token,
    ml_agent_home,
    protocol,
)
from ml_agent.errors import BackendError, RunNotFound
from ml_agent.fileio import atomic_write_bytes
from ml_agent.lines import MAX_LINE_BYTES, was_cut

if TYPE_CHECKING:
    import modal

    from ml_agent.plan import Plan

Progress = Callable[[str], None]
#: The app name of the shipped configs: looked in when a run is in no known app's registry.
DEFAULT_APP = "ml-agent"
LIVE = ("starting", "running")
#: A syncer whose pulse is older than this is presumed gone and is spawned again.
SYNCER_GRACE_S = 300.0
#: A run token outlives its sandbox's timeout by this much (then the proxy refuses it).
TOKEN_SLACK_S = 600.0
#: modal's return code of a sandbox that reached its timeout (`_result_returncode`).
TIMED_OUT = 124
#: How often a followed or finishing run looks for a key the upstream refused: the Claude
#: CLI would retry the 401 for minutes (issue 13.2); one modal.Dict read each time.
KEY_CHECK_S = 2.0

SECRET_KEYS = {"proxy": "ANTHROPIC_API_KEY=sk-ant-...", "syncer": "HF_TOKEN=hf_..."}


def _no_progress(message: str) -> None:
    pass


@contextlib.contextmanager
def image_builder(version: str) -> Iterator[None]:
    """Build images with the config's image builder version, whatever the workspace's.

    modal reads MODAL_IMAGE_BUILDER_VERSION at each build (modal/_image.py
    `_get_image_builder_version`: the local setting wins over the workspace's).
    """
    name = "MODAL_IMAGE_BUILDER_VERSION"
    saved = os.environ.get(name)
    os.environ[name] = version
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


class ModalBackend:
    """The Modal backend; constructing it reads nothing (the CLI builds it for every command)."""

    name = "modal"

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress or _no_progress
        self._registry: RunRegistry | None = None
        #: run id -> the one Sandbox handle whose stdin writer this process uses for it.
        self._writers: dict[str, modal.Sandbox] = {}
        #: (app id, image_hash) -> the built image: a sweep's driver builds it once, not
        #: once per run (building every layer again was 0.12 s of a 0.2 s launch).
        self._images: dict[tuple[str, str], modal.Image] = {}

    @property
    def registry(self) -> RunRegistry:
        if self._registry is None:
            with modal_errors("opening the run registry"):
                self._registry = RunRegistry()
        return self._registry

    # -- up ------------------------------------------------------------------------------
    def up(
        self, plan: Plan, *, task: str | None, detach: bool, progress: Progress | None = None
    ) -> RunRecord:
        """Launch the run; Modal sandboxes always outlive this process (`detach` or not)."""
        with image_builder(plan.image.builder):
            return self._up(plan, task=task, progress=progress)

    def _up(self, plan: Plan, *, task: str | None, progress: Progress | None,
            resumed: RunRecord | None = None, run_budget: float | None = None) -> RunRecord:
        """`resumed`: the record of the run this launch continues (`resume`), whose token
        gets `run_budget`, the run's whole budget: the proxy meters a run across legs."""
        import modal

        from ml_agent.plan import launch_env

        say = progress or self.progress
        if plan.launch is None:
            raise ValueError("up() needs a plan from Plan.for_launch(run_id)")
        if not plan.proxy.enabled:
            raise BackendError(
                "the Modal backend keeps the Anthropic key in the proxy only: set "
                "`proxy.enabled: true` (and `proxy.secret`)"
            )
        run_id = plan.launch.run_id
        with modal_errors("checking your Modal secrets"):
            self._check_secrets(plan)
        proxy_url = self.ensure_app(plan, say)
        state = AppState(plan.app)

        with modal_errors("writing the run token"):
            token = mint_token()
            token_hash = hash_token(token)
            expires = time.time() + plan.sandbox.timeout_s + TOKEN_SLACK_S
            budget = run_budget if resumed is not None else plan.proxy.budget_usd
            record = TokenRecord(run_id=run_id, expires_at=expires, budget_usd=budget)
            ModalTokenStore.for_app(plan.app).put(token_hash, record)
            state.put(f"token:{run_id}", token_hash)
        _save_token(run_id, token)
        try:
            with modal_errors("looking up the deployed app"):
                app = modal.App.lookup(plan.app)
            image = self.build_image(plan, app, say)
            env = launch_env(plan, base_url=proxy_url, token=token)
            args, kwargs = builder.sandbox_create_args(
                plan, app=app, image=image, env=env, task=task, proxy_url=proxy_url
            )
            say(f"scheduling the sandbox ({plan.sandbox.gpu or 'CPU'})")
            with modal_errors("creating the sandbox"):
                sandbox = modal.Sandbox.create(*args, **kwargs)
        except BaseException:
            # No sandbox will use the token (Ctrl-C included): make it worthless at once.
            with contextlib.suppress(Exception):
                self._revoke(plan.app, run_id)
            raise
        if resumed is not None:
            run = resumed
            run.new_leg(time.time())
        else:
            run = RunRecord.launched(plan, backend=self.name, config=plan.config_path)
        run.status, run.sandbox_id = "running", sandbox.object_id
        with modal_errors("recording the run"):
            self.registry.put(run)
            if resumed is None:  # what `up --resume` starts from (--set overrides included)
                state.put(f"plan:{run_id}", plan.model_dump(mode="json"))
            else:  # a new sandbox numbers its stdin from the start, not where the last left
                state.put(f"stdin:{run_id}", stdin_position(sandbox))
        self._writers[run_id] = sandbox
        if task is not None:  # one-shot: the task is the agent's first stdin line
            try:
                self._write_stdin(run, protocol.task_input(task))
            except Exception:
                code = sandbox.poll()
                if code is None:  # it would wait for its task until its timeout: stop it
                    with contextlib.suppress(Exception):
                        self.stop(run_id)
                    raise
                say(f"the sandbox ended (exit code {code}) before it got the task: see "
                    f"`ml-agent logs {run_id}`")
        if plan.syncer.enabled:
            # After the sandbox exists: the syncer stops itself once no sandbox is left.
            with modal_errors("starting the metric syncer"):
                self.ensure_syncer(plan, state, say)
        say(f"sandbox {sandbox.object_id} is running")
        return run

    def resume(self, run_id: str, *, task: str | None, detach: bool,
               budget_usd: float | None = None) -> RunRecord:
        """A new sandbox for an ended run (`up --resume`): the same run folder on the data
        volume and the same Claude session, a new run token, the budget left; `budget_usd`:
        the run's new total budget (`--budget`), kept with the run's plan for later legs.

        The plan is the run's own, kept in the app's state at `up` (else its config file
        as it is now); the session and the cost so far come from the run folder (the app's
        `resume_info`) or, for an app deployed before it, from the run's events.
        """
        from ml_agent import resume as resuming
        from ml_agent.config import load_config
        from ml_agent.plan import Plan, build_plan

        record = self.find(run_id)
        resuming.check_resumable(record, live=self._live(record))
        with modal_errors("reading the run's plan"):
            kept = AppState(record.app).get(f"plan:{record.run_id}")
        if kept is not None:
            plan = Plan.model_validate(kept)
        else:  # the state Dict forgot it (7 days untouched): the config file as it is now
            try:
                plan = build_plan(load_config(record.config), record.config)
            except FileNotFoundError:
                raise BackendError(f"run {record.run_id} was started from {record.config}, "
                                   "which is gone: put it back to resume the run") from None
            self.progress(f"note: the new leg runs {record.config} as it is now (the run's "
                          "own plan, --set overrides included, has expired)")
        info = self._resume_info(record)
        left = resuming.remaining_budget(record, plan.proxy.budget_usd, info.get("result"),
                                         raised_to=budget_usd)
        if budget_usd is not None:  # the run's budget from now on (the token gets it whole)
            plan = plan.model_copy(update={"proxy": plan.proxy.model_copy(
                update={"budget_usd": budget_usd})})
        session = info.get("session")
        if not resuming.is_session_id(session):  # an app deployed before resume_info
            session = resuming.session_from_events(info.get("events") or [])
        if session is None:
            raise resuming.no_session(record.run_id)
        self._revoke(record.app, record.run_id)  # the last leg's, if nothing revoked it
        leg = plan.model_copy(update={"proxy": plan.proxy.model_copy(
            update={"budget_usd": left})}).for_launch(record.run_id, resume_session=session)
        with image_builder(plan.image.builder):
            run = self._up(leg, task=task, progress=None, resumed=record,
                           run_budget=plan.proxy.budget_usd)
        if budget_usd is not None:
            with modal_errors("recording the run's new budget"):
                AppState(record.app).put(f"plan:{record.run_id}", plan.model_dump(mode="json"))
        return run

    def _live(self, record: RunRecord) -> bool:
        """The run's sandbox still runs (`ps` would record how a run that ended ended)."""
        import modal
        from modal.exception import NotFoundError

        if record.status not in LIVE or not record.sandbox_id:
            return False
        with modal_errors(f"checking the sandbox of run {record.run_id}"):
            try:
                code = modal.Sandbox.from_id(record.sandbox_id).poll()
            except NotFoundError:
                code = -1  # Modal forgot it: long gone
        if code is None:
            return True
        record.status = status_of(code) if code >= 0 else "failed"
        record.exit_code, record.ended_at = (code if code >= 0 else None), time.time()
        record.cost_usd = ModalUsageSink.for_app(record.app).get(record.run_id).get(
            "cost_usd", record.cost_usd)
        return False

    def _resume_info(self, record: RunRecord) -> dict[str, Any]:
        """`resume_info` of the deployed app; for an app without it, the run's events."""
        with modal_errors(f"reading the run folder of run {record.run_id}"):
            info = self._app_function(record.app, "resume_info")
            if info is not None:
                found = info.remote(record.run_id)
                return found if isinstance(found, dict) else {}
            run_events = self._app_function(record.app, "run_events")
            events = run_events.remote(record.run_id, 2**62) if run_events is not None else []
        lines = (json.dumps(e) for e in events or [] if isinstance(e, dict))
        return {"events": [e for e in map(protocol.decode_event, lines) if e is not None]}

    def _check_secrets(self, plan: Plan) -> None:
        """Every named secret exists, or one error with the exact commands to create them."""
        import modal
        from modal.exception import NotFoundError

        wanted = [(name, "sandbox") for name in plan.sandbox.secrets]
        if plan.proxy.secret:
            wanted.append((plan.proxy.secret, "proxy"))
        if plan.syncer.enabled and plan.syncer.secret:
            wanted.append((plan.syncer.secret, "syncer"))
        missing = []
        for name, role in wanted:
            try:
                modal.Secret.from_name(name).hydrate()
            except NotFoundError:
                missing.append(f"modal secret create {name} {SECRET_KEYS.get(role, 'KEY=VALUE')}")
        if missing:
            raise BackendError(
                "missing Modal secret(s); create them with:\n  " + "\n  ".join(missing)
            )

    def ensure_app(self, plan: Plan, say: Progress) -> str:
        """Deploy the proxy and syncer when `plan.app_hash` or the code they run changed
        (`code_hash`: an upgraded ml-agent) and no run uses the deployed ones; return the
        proxy URL. Changed settings under live runs are refused; changed code waits."""
        import modal
        from modal.exception import NotFoundError

        from ml_agent.backends.modal.app import build_app, code_hash, deployed_hash

        wanted, code = deployed_hash(plan), code_hash()
        with modal_errors("checking the deployed app"):
            state = AppState(plan.app)
            deployed, deployed_code = state.get("app_hash"), state.get("code_hash")
            url = None
            if deployed == wanted and deployed_code == code:
                try:
                    url = modal.Function.from_name(plan.app, "proxy").get_web_url()
                except NotFoundError:
                    url = None  # the app was stopped or deleted since: deploy again
        if url:
            say(f"app '{plan.app}' is up to date")
            return url
        live = []
        if deployed is not None:
            live = [r.run_id for r in self._refresh(self.registry.all()) if r.app == plan.app
                    and r.status in LIVE]
        if live and deployed != wanted:
            raise BackendError(
                f"the proxy/syncer/data volume settings of app '{plan.app}' changed, but "
                f"{len(live)} run(s) still use the deployed ones ({', '.join(live)}). "
                "Stop them first (`ml-agent stop --all`) or give this config another `app:`."
            )
        if live:  # only the code differs (another ml-agent version): not under live runs,
            # where two proxy containers at once could each miss the other's usage records
            with modal_errors("checking the deployed app"):
                try:
                    url = modal.Function.from_name(plan.app, "proxy").get_web_url()
                except NotFoundError:
                    url = None
            if url:
                say(f"app '{plan.app}' runs another ml-agent version's proxy/syncer code; it "
                    f"is redeployed once its {len(live)} live run(s) have ended")
                return url
        say(f"deploying app '{plan.app}' (proxy and syncer)")
        with modal_errors("deploying the app"):
            app = build_app(plan)
            app.deploy(name=plan.app)
            url = modal.Function.from_name(plan.app, "proxy").get_web_url()
            state.put("app_hash", wanted)
            state.put("code_hash", code)
            state.put("proxy_secret", plan.proxy.secret)  # named when the key is refused
        if not url:
            raise BackendError(f"app '{plan.app}' was deployed but its proxy has no web URL")
        return url

    def ensure_syncer(self, plan: Plan, state: AppState, say: Progress) -> None:
        """One syncer per app: spawn it unless it (or a recent spawn) shows a pulse."""
        import modal

        pulse = max(state.get("syncer_heartbeat", 0.0), state.get("syncer_spawned_at", 0.0))
        grace = max(SYNCER_GRACE_S, 3 * plan.syncer.interval_s)
        if time.time() - pulse < grace:
            return
        say("starting the metric syncer")
        call = modal.Function.from_name(plan.app, "syncer").spawn()
        state.put("syncer_spawned_at", time.time())
        state.put("syncer_call_id", call.object_id)

    def build_image(self, plan: Plan, app: modal.App, say: Progress) -> modal.Image:
        """Build layer by layer, so progress and a failure name the layer."""
        from modal.exception import ImageBuildError, RemoteError

        from ml_agent.plan import image_hash

        key = (app.app_id or "", image_hash(plan))
        if key in self._images:
            return self._images[key]
        chain = builder.build_image(plan.image)
        for index, (label, image) in enumerate(chain):
            say(f"image {index}/{len(chain) - 1}: {label}")
            with modal_errors(f"building the image ({label})"):
                try:
                    image.build(app)
                except (ImageBuildError, RemoteError) as exc:
                    raise BackendError(
                        f"the image build failed at {label}: {exc}. Fix that layer in "
                        f"image.layers of {plan.config_path} (Modal keeps the layers before "
                        "it)."
                    ) from None
        self._images[key] = chain[-1][1]
        return chain[-1][1]

    # -- runs ----------------------------------------------------------------------------
    def find(self, run_id: str) -> RunRecord:
        """A run by id or unique id prefix; a run the registry forgot (its entries expire
        after 7 days untouched) is looked for in the run folders of the data volume."""
        matches = self._matches(run_id)
        if not matches:
            with modal_errors("reading the run registry"):
                apps = {r.app for r in self.registry.all()} | {DEFAULT_APP}
            for app in sorted(apps):
                self.rebuild_registry(app)
            matches = self._matches(run_id)
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise RunNotFound(f"'{run_id}' matches {len(matches)} runs; give more of the id")
        raise RunNotFound(f"no Modal run '{run_id}' (see `ml-agent ps`)")

    def _matches(self, run_id: str) -> list[RunRecord]:
        with modal_errors("reading the run registry"):
            record = self.registry.get(run_id)
            if record is not None:
                return [record]
            return [r for r in self.registry.all() if r.run_id.startswith(run_id)]

    def rebuild_registry(self, app: str) -> list[RunRecord]:
        """Put back into the registry the ended runs of `app` that its data volume keeps
        (run.json, written at each run's end) and the registry has forgotten; returns them.

        The run folders are the durable record: the registry modal.Dict is an index.
        """
        try:
            with modal_errors(f"reading the runs of app '{app}' from its data volume"):
                list_runs = self._app_function(app, "list_runs")
                found = (list_runs.remote() if list_runs is not None else None) or []
        except BackendError:
            return []  # no such app (or an older one): nothing to rebuild from
        restored = []
        with modal_errors("rebuilding the run registry"):
            for data in found:
                if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
                    continue
                if self.registry.get(data["run_id"]) is None:
                    record = RunRecord.from_dict(data)
                    self.registry.put(record)
                    restored.append(record)
        return restored

    def record(self, run_id: str) -> RunRecord | None:
        """The registry entry of a run (exact id), or None."""
        with modal_errors("reading the run registry"):
            return self.registry.get(run_id)

    def token(self, run_id: str) -> str | None:
        """The run token, if this machine launched the run: the CLI redacts it from output."""
        path = _token_path(run_id)
        return path.read_text().strip() if path.is_file() else None

    def _sandbox(self, record: RunRecord) -> modal.Sandbox:
        import modal

        if not record.sandbox_id:
            raise BackendError(f"run {record.run_id} has no sandbox")
        with modal_errors(f"finding the sandbox of run {record.run_id}"):
            return modal.Sandbox.from_id(record.sandbox_id)

    def events(self, run_id: str, *, follow: bool) -> Iterator[dict[str, Any]]:
        """The run's events from the first, then (`follow`) as they come.

        They are read from the sandbox's stdout. A V2 sandbox keeps only its recent output:
        when that no longer starts at the first event, the missing ones come from the run's
        own event log (its transcript on the data volume, through the app's `run_events`).
        """
        record = self.find(run_id)
        sandbox = self._sandbox(record)
        # Following: a key the upstream refuses ends the run within seconds, and is said.
        watch = _KeyWatch(self, record) if follow else None
        first, last = True, 0
        for _, line in read_lines(sandbox, ("stdout",), follow=follow):
            event = protocol.decode_event(line)
            if event is None:
                if was_cut(line):
                    self.progress(f"warning: run {run_id} printed a line longer than "
                                  f"{MAX_LINE_BYTES} bytes (an event is never that long); "
                                  "skipped")
                continue
            if first and event["seq"] > 1:
                yield from self._replay(record, before=event["seq"])
            first, last = False, event["seq"]
            yield event
        if watch is not None:
            yield from watch.end(last)

    def _replay(self, record: RunRecord, *, before: int) -> list[dict[str, Any]]:
        """Events `seq < before` from the run's transcript on the data volume."""
        try:
            with modal_errors(f"reading the event log of run {record.run_id}"):
                run_events = self._app_function(record.app, "run_events")
                if run_events is None:
                    self.progress("warning: the start of the run's output is gone, and the "
                                  "deployed app (an older ml-agent) cannot replay it")
                    return []
                events = run_events.remote(record.run_id, before)
        except Exception as exc:  # noqa: BLE001 - the live events still follow; say why
            self.progress(f"warning: the start of the run's output is gone ({exc})")
            return []
        # What the function returns is the run folder's (agent-written) text: check it.
        lines = (json.dumps(e) for e in events or [] if isinstance(e, dict))
        return [e for e in map(protocol.decode_event, lines) if e is not None]

    def send(self, run_id: str, line: str) -> None:
        self._write_stdin(self.find(run_id), line if line.endswith("\n") else line + "\n")

    def _write_stdin(self, record: RunRecord, text: str) -> None:
        """Write to the agent's stdin through the run's one writer, in chunks modal accepts.

        modal numbers each drain of a stdin writer (V1: `index` from 1; V2: a byte
        `offset` from 0) and Modal drops a write whose number it has already seen, so a
        fresh `Sandbox.from_id` handle per line would lose every line after the first. This
        process keeps one handle per run, and the writer's position is kept in the app's
        state so that the next process (`attach`) continues the numbering.
        """
        state = AppState(record.app)
        key = f"stdin:{record.run_id}"
        with modal_errors(f"writing to run {record.run_id}"):
            sandbox = self._writers.get(record.run_id)
            if sandbox is None:
                sandbox = self._writers[record.run_id] = self._sandbox(record)
                set_stdin_position(sandbox, state.get(key))
            write_stdin(sandbox, text)
            state.put(key, stdin_position(sandbox))

    def logs(self, run_id: str, *, follow: bool) -> Iterator[str]:
        sandbox = self._sandbox(self.find(run_id))
        for _, line in read_lines(sandbox, ("stdout", "stderr"), follow=follow):
            yield line.rstrip("\n")

    def ps(self) -> list[RunRecord]:
        with modal_errors("listing runs"):
            return self._refresh(self.registry.all())

    def _refresh(self, records: list[RunRecord]) -> list[RunRecord]:
        """Live runs get their status from Modal and their cost from the proxy's usage."""
        import modal
        from modal.exception import NotFoundError

        for record in records:
            if record.status not in LIVE or not record.sandbox_id:
                continue
            try:
                returncode = modal.Sandbox.from_id(record.sandbox_id).poll()
            except NotFoundError:
                continue  # Modal forgot it (long gone): keep the last known status
            cost = ModalUsageSink.for_app(record.app).get(record.run_id).get("cost_usd")
            changed = cost is not None and cost != record.cost_usd
            record.cost_usd = cost if cost is not None else record.cost_usd
            if returncode is not None:
                record.status = status_of(returncode)
                record.exit_code = returncode
                record.ended_at = time.time()
                changed = True
                # Ended by itself: the token is worthless now, and result.json gets the
                # proxy's usage in the background (`finish` does it and waits).
                with contextlib.suppress(Exception):
                    self._revoke(record.app, record.run_id)
                with contextlib.suppress(Exception):
                    self._finalize(record, wait=False)
            if changed:
                self.registry.put(record)
        return records

    def stop(self, run_id: str) -> RunRecord:
        """Stop the sandbox, then the end of the run (`finish`): final metric sync, token
        revoked, the proxy's usage in result.json.

        The sync runs after the sandbox has ended so that it sees the last rows the sandbox
        committed to the volume. Idempotent: a finished run is returned as it is.
        """
        record = self.find(run_id)
        if record.status not in LIVE:
            return record
        sandbox = self._sandbox(record)
        with modal_errors(f"stopping run {record.run_id}"):
            ended = sandbox.poll()
            if ended is None:
                self.progress(f"stopping sandbox {record.sandbox_id}")
                sandbox.terminate()
                code = _wait_for_end(sandbox)
        if ended is not None:  # it ended by itself before `ps` noticed: say how
            return self._end(record, status=status_of(ended), exit_code=ended)
        # It may have reached its timeout between `poll` and `terminate`: say so.
        status = "timeout" if code == TIMED_OUT else "stopped"
        return self._end(record, status=status, exit_code=code)

    def finish(self, run_id: str) -> RunRecord:
        """The end of a run whose sandbox has ended by itself (a one-shot `--task` run):
        final metric sync, token revoked, proxy usage in result.json, status recorded.

        Waits for the sandbox to end. Idempotent, like `stop`; the CLI calls it when it has
        followed a run to its end.
        """
        record = self.find(run_id)
        if record.status not in LIVE:
            return record
        sandbox = self._sandbox(record)
        with modal_errors(f"waiting for the end of run {record.run_id}"):
            while sandbox.poll() is None:
                if self._key_refusal(record):  # the agent would retry it for minutes
                    self.progress(f"the proxy's key was refused: stopping sandbox "
                                  f"{record.sandbox_id}")
                    sandbox.terminate()
                    break
                time.sleep(KEY_CHECK_S)
            code = _wait_for_end(sandbox)
        return self._end(record, status=status_of(code) if code is not None else "failed",
                         exit_code=code)

    def _end(self, record: RunRecord, *, status: str, exit_code: int | None) -> RunRecord:
        """After the sandbox ended: sync, revoke, record, then write the usage to result.json.

        The registry entry is written before result.json, so a failure of the last step
        leaves the run recorded as ended (with a warning) rather than live. A run during
        which the upstream refused the proxy's key failed, whatever the sandbox said.
        """
        error = self._key_refusal(record, quiet=True)
        self._final_sync(record.app)
        with modal_errors(f"recording the end of run {record.run_id}"):
            self._revoke(record.app, record.run_id)
            usage = ModalUsageSink.for_app(record.app).get(record.run_id)
            record.status = "failed" if error else status
            record.ended_at = time.time()
            record.exit_code = exit_code
            record.cost_usd = usage.get("cost_usd", record.cost_usd)
            self.registry.put(record)
        self._finalize(record, wait=True, usage=usage, error=error)
        return record

    def _app_function(self, app: str, name: str) -> modal.Function | None:
        """A function of the deployed app, or None when that deployment has none."""
        import modal
        from modal.exception import NotFoundError

        try:
            function = modal.Function.from_name(app, name)
            function.hydrate()
        except NotFoundError:
            return None
        return function

    def _final_sync(self, app: str) -> None:
        """Run the app's `sync_now` once; an app deployed without a syncer has none."""
        try:
            with modal_errors("the final metric sync"):
                sync_now = self._app_function(app, "sync_now")
                if sync_now is None:
                    return
                self.progress("final metric sync (the sandbox has ended)")
                done = sync_now.remote()
        except Exception as exc:  # noqa: BLE001 - the run is stopped either way; say why
            self.progress(f"warning: the final metric sync failed: {exc}")
            return
        self.progress(f"final metric sync done: {_sync_summary(done)}")

    def _finalize(
        self, record: RunRecord, *, wait: bool, usage: dict[str, float] | None = None,
        error: str | None = None,
    ) -> None:
        """Have the app's `finalize_run` put the proxy's usage into the run's result.json."""
        try:
            with modal_errors("writing the proxy's usage into result.json"):
                finalize = self._app_function(record.app, "finalize_run")
                if finalize is None:
                    self.progress("warning: the deployed app has no finalize_run (deployed by "
                                  "an older ml-agent): result.json keeps proxy_usage null")
                    return
                if usage is None:
                    usage = ModalUsageSink.for_app(record.app).get(record.run_id)
                args = (record.run_id, usage, record.status, record.ended_at,
                        record.to_dict())
                # `error` only when there is one: an app deployed before it knows no such
                # argument, and its runs still end normally.
                kwargs = {"error": error} if error else {}
                if not wait:
                    finalize.spawn(*args, **kwargs)
                    return
                outcome = finalize.remote(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the run has ended either way; say why
            self.progress(f"warning: result.json not updated with the proxy's usage: {exc}")
            return
        where = f"{record.run_dir or 'the run folder'}/{protocol.RESULT_FILE}"
        if outcome == "proxy usage written":
            self.progress(f"proxy usage written to {where}")
        else:
            self.progress(f"warning: {where} not updated with the proxy's usage: {outcome}")

    def _key_refusal(self, record: RunRecord, *, quiet: bool = False) -> str | None:
        """Why the run failed when the upstream refused the proxy's key while it lived (the
        proxy notes it in the app's state), naming the Modal secret that holds the key;
        None otherwise. `quiet`: a failure to look is None, not an error."""
        try:
            state = AppState(record.app)
            fact = state.get(KEY_REFUSED)
            if not isinstance(fact, dict) or not isinstance(fact.get("ts"), int | float):
                return None
            # One proxy serves every run of the app: a refusal before this run began was
            # another run's (the key may have been fixed since).
            if fact["ts"] < record.created_at:
                return None
            secret = state.get("proxy_secret")
        except Exception:
            if quiet:
                return None
            raise
        where = (f"the Modal secret '{secret}'" if isinstance(secret, str) and secret
                 else "the proxy's Modal secret (`proxy.secret` of the config)")
        fix = (f"`modal secret create --force {secret} {SECRET_KEYS['proxy']}`"
               if isinstance(secret, str) and secret else "put a valid key there")
        return (f"the Anthropic API refused the key in {where} ({fact.get('status')} "
                f"{fact.get('type') or 'error'}: {fact.get('message') or 'no message'}); "
                f"{fix}, then start the run again")

    def _revoke(self, app: str, run_id: str) -> None:
        """The run is over: its token worthless, its stdin position forgotten."""
        state = AppState(app)
        state.forget(f"stdin:{run_id}")
        self._writers.pop(run_id, None)
        token_hash = state.get(f"token:{run_id}")
        if not token_hash:
            return
        tokens = ModalTokenStore.for_app(app)
        current = tokens.get(token_hash)
        if current is not None:
            tokens.put(token_hash, TokenRecord(**{**current.to_dict(), "revoked": True}))


class _KeyWatch:
    """While a run is followed, looks every KEY_CHECK_S for a key the upstream refused;
    then terminates the sandbox (its output ends, and the follower ends the run) and keeps
    why in `refused`."""

    def __init__(self, backend: ModalBackend, record: RunRecord) -> None:
        self.refused: str | None = None
        self._backend, self._record = backend, record
        self._stopped = threading.Event()
        threading.Thread(target=self._watch, daemon=True,
                         name=f"key-watch-{record.run_id}").start()

    def end(self, last_seq: int) -> Iterator[dict[str, Any]]:
        """The run's output has ended: stop watching; an error event when the key was
        refused (also when the agent gave up on it before the watch saw it)."""
        self._stopped.set()
        why = self.refused or self._backend._key_refusal(self._record, quiet=True)
        if why:
            yield {"type": protocol.ERROR, "seq": last_seq + 1, "ts": time.time(),
                   "message": why, "fatal": True, "kind": "key_refused"}

    def _watch(self) -> None:
        import modal

        record, failures = self._record, 0
        while not self._stopped.wait(KEY_CHECK_S):
            try:
                why = self._backend._key_refusal(record)
                if why is not None and not self._stopped.is_set():
                    self.refused = why
                    modal.Sandbox.from_id(record.sandbox_id or "").terminate()
                    return
                failures = 0
            except Exception:  # noqa: BLE001 - a blip: look again; Modal gone: stop looking
                failures += 1
                if failures >= 3:
                    return


def _token_path(run_id: str) -> Path:
    return ml_agent_home() / "modal" / "tokens" / run_id


def _save_token(run_id: str, token: str) -> None:
    """Only the launching machine keeps the raw token (0600), to redact it from output."""
    path = _token_path(run_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_bytes(path, token.encode(), mode=0o600)  # never through a planted link


def _sync_summary(done: Any) -> str:
    """sync_now's report in a few words."""
    if not isinstance(done, dict):
        return "done"
    uploaded, failed = done.get("uploaded") or [], done.get("failed") or []
    if done.get("space_id") is None:
        return "no Space to publish to yet"
    text = f"{len(uploaded)} changed project(s) uploaded to {done['space_id']}"
    if failed:
        text += f"; not published: {', '.join(failed)} (the metrics stay on the volume)"
    return text


def _wait_for_end(sandbox: modal.Sandbox) -> int | None:
    """Wait until the sandbox has ended; its return code (TIMED_OUT when its timeout hit).

    modal's `wait(raise_on_termination=False)` still raises SandboxTimeoutError for a
    sandbox that reached its `timeout` (modal/sandbox/_common.py `raise_for_wait_result`):
    that is an end like any other here, not an error.
    """
    from modal.exception import SandboxTimeoutError

    with contextlib.suppress(SandboxTimeoutError):
        sandbox.wait(raise_on_termination=False)
    return sandbox.returncode


def status_of(returncode: int) -> str:
    """A finished sandbox's status for `ps` (Modal: 124 = timed out, 137 = terminated)."""
    if returncode == 0:
        return "succeeded"
    if returncode == TIMED_OUT:
        return "timeout"
    if returncode == 137:
        return "stopped"
    return "failed"
