"""An in-process fake of Modal's gRPC control plane on 127.0.0.1, for the real modal SDK.

The real `modal` client talks to it through `MODAL_SERVER_URL`; nothing here is mocked on
the client side. It implements the RPCs that deploying an app, building images, resolving
volumes/secrets/dicts, spawning functions and driving sandboxes need, and records every
request so tests can assert what the SDK asked for. Everything else answers UNIMPLEMENTED.

    with FakeModal() as fake:                     # a server thread on a free port
        with fake.environ():                      # MODAL_* env for the SDK (and nothing else)
            ...use modal...
        fake.requests("SandboxCreate")            # the recorded request messages
        fake.sandboxes[sid].write_stdout("...")   # play the process inside the sandbox
        fake.function_handlers["f"] = body         # run a function call's body, here
        fake.function_calls("f")                   # [(args, kwargs)] of every call of f

Fixture: `fake_modal` in tests/modal/conftest.py (copy it or import `FakeModal` elsewhere).
Sandboxes are V1 (`SandboxCreate`, GPU) or V2 (`SandboxCreateV2`, CPU: stdio through the
task command router, `FakeTaskRouter`), as modal picks by default; their ids have their
kind's shape (V1: `sb-` + 22 characters), as the SDK routes on it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import inspect
import itertools
import json
import os
import pickle
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, get_args

import grpclib.server
from google.protobuf.empty_pb2 import Empty
from grpclib import GRPCError, Status
from grpclib.events import RecvRequest, listen
from modal._image import ImageBuilderVersion
from modal._serialization import serialize
from modal._utils.grpc_testing import patch_mock_servicer
from modal._utils.name_utils import is_valid_object_name, is_valid_tag
from modal_proto import api_grpc, api_pb2, task_command_router_grpc, task_command_router_pb2

TOKEN_ID = "ak-fake-modal-test"
TOKEN_SECRET = "as-fake-modal-test"
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_NOT_AUTHENTICATED = ("/modal.client.ModalClient/TokenFlowCreate",)


ROUTER_JWT = "fake-router-jwt"


def _jwt(expires_at: float) -> str:
    """An unsigned JWT with only `exp`: what modal reads of its auth tokens."""
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'exp': int(expires_at)})}.sig"


def _check_name(name: str, kind: str) -> None:
    """Modal's rule for object names (modal/_utils/name_utils.py `is_valid_object_name`)."""
    if not is_valid_object_name(name):
        raise GRPCError(Status.INVALID_ARGUMENT, f"Invalid {kind} name: '{name}'")


def _check_tags(tags: dict[str, str]) -> None:
    """Modal's rule for sandbox tags, checked by the server (`check_tag_dict`: <= 63)."""
    for text in (*tags, *tags.values()):
        if not is_valid_tag(text, max_length=63):
            raise GRPCError(Status.INVALID_ARGUMENT, f"Invalid tag: {text!r}")


def _check_resources(definition: api_pb2.Sandbox) -> None:
    """What the server refuses that the client lets through (modal/_resources.py checks
    only that a limit is not below its request): negative reservations, unknown clouds."""
    res = definition.resources
    if min(res.milli_cpu, res.milli_cpu_max, res.memory_mb, res.memory_mb_max) < 0:
        raise GRPCError(Status.INVALID_ARGUMENT, "CPU and memory must be positive")
    clouds = {n.removeprefix("CLOUD_PROVIDER_").lower() for n, _ in api_pb2.CloudProvider.items()}
    cloud = definition.cloud_provider_str
    if cloud and cloud.lower() not in clouds - {"unspecified"}:
        raise GRPCError(Status.INVALID_ARGUMENT, f"Invalid cloud provider: {cloud!r}")


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class FakeSandbox:
    """The process "inside" a fake sandbox: tests write its output and read its input."""

    sandbox_id: str
    app_id: str
    definition: api_pb2.Sandbox
    tags: dict[str, str]
    created_at: float
    server: FakeModal
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    stdin: list[bytes] = field(default_factory=list)
    stdin_closed: bool = False
    stdin_index: int = 0  # the highest write index received (V1)
    stdin_dropped: list[bytes] = field(default_factory=list)  # writes dropped as repeats
    result: api_pb2.GenericResult | None = None
    scheduled: bool = True  # False: SandboxGetTaskId never returns a task (capacity)
    changed: asyncio.Condition | None = None
    v2: bool = False  # created by SandboxCreateV2: its stdio goes through the task router
    env: dict[str, str] = field(default_factory=dict)  # its env, from every secret source

    @property
    def task_id(self) -> str:
        """V2 task ids end in 'V' (modal's `_is_v2_task_id`)."""
        return "ta-" + self.sandbox_id[3:] + ("V" if self.v2 else "")

    @property
    def stdin_text(self) -> str:
        return b"".join(self.stdin).decode()

    def write_stdout(self, text: str) -> None:
        self.server.call(self._append, self.stdout, text)

    def write_stderr(self, text: str) -> None:
        self.server.call(self._append, self.stderr, text)

    def time_out(self) -> None:
        """End the sandbox as Modal does at its `timeout`: status TIMEOUT, no exit code."""
        self.server.call(self._time_out)

    async def _time_out(self) -> None:
        timeout = api_pb2.GenericResult.GENERIC_STATUS_TIMEOUT
        await self._finish(api_pb2.GenericResult(status=timeout))

    def exit(self, code: int = 0) -> None:
        status = (
            api_pb2.GenericResult.GENERIC_STATUS_SUCCESS
            if code == 0
            else api_pb2.GenericResult.GENERIC_STATUS_FAILURE
        )
        self.server.call(self._finish, api_pb2.GenericResult(status=status, exitcode=code))

    async def _append(self, stream: list[str], text: str) -> None:
        stream.append(text)
        await self._notify()

    async def _finish(self, result: api_pb2.GenericResult) -> None:
        if self.result is None:
            self.result = result
        await self._notify()

    async def _notify(self) -> None:
        assert self.changed is not None
        async with self.changed:
            self.changed.notify_all()


@patch_mock_servicer
class FakeModalServicer(api_grpc.ModalClientBase):
    """Holds the fake control plane's state; one handler per RPC the SDK uses here."""

    def __init__(self, server: FakeModal) -> None:
        self.server = server
        self.calls: list[tuple[str, Any]] = []
        self.ids = itertools.count(1)
        self.deployed_apps: dict[str, str] = {}  # name -> app id
        self.app_objects: dict[str, dict[str, str]] = {}  # app id -> tag -> function id
        self.functions: dict[str, api_pb2.Function] = {}
        self.function_data: dict[str, api_pb2.FunctionData] = {}
        self.images: dict[str, api_pb2.Image] = {}
        self.image_failures: dict[str, str] = {}  # a dockerfile command substring -> error
        self.volumes: dict[str, str] = {}
        self.secrets: dict[str, str] = {}  # name -> id (named secrets must be created first)
        self.secret_env: dict[str, dict[str, str]] = {}
        self.dicts: dict[str, str] = {}
        self.dict_data: dict[str, dict[bytes, bytes]] = {}
        self.mounts: dict[str, list[str]] = {}
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.function_results: dict[str, Any] = {}  # function name -> returned value
        #: function name -> a callable run (in a worker thread) with each call's arguments;
        #: what it returns (or raises) is the call's result. Unset: `function_results`.
        self.function_handlers: dict[str, Callable[..., Any]] = {}
        self.function_inputs: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.calls_by_fc: dict[str, str] = {}  # function call id -> function id
        self.running: dict[str, asyncio.Future[Any]] = {}  # function call id -> handler run

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids)}"

    async def _recv(self, name: str, stream) -> Any:
        request = await stream.recv_message()
        self.calls.append((name, request))
        if self.server.latency:
            await asyncio.sleep(self.server.latency)
        return request

    async def recv_request(self, event: RecvRequest) -> None:
        """Authenticate like Modal: a client must send the token it was given."""
        if event.method_name in _NOT_AUTHENTICATED:
            return
        if event.metadata.get("x-modal-client-type") != str(api_pb2.CLIENT_TYPE_CLIENT):
            raise GRPCError(Status.FAILED_PRECONDITION, "unknown client type")
        if (
            event.metadata.get("x-modal-token-id") != self.server.token_id
            or event.metadata.get("x-modal-token-secret") != self.server.token_secret
        ):
            raise GRPCError(Status.UNAUTHENTICATED, "Token validation failed")

    # -- client, environment -------------------------------------------------------------
    async def ClientHello(self, stream) -> None:
        await self._recv("ClientHello", stream)
        await stream.send_message(api_pb2.ClientHelloResponse())

    async def EnvironmentGetOrCreate(self, stream) -> None:
        request = await self._recv("EnvironmentGetOrCreate", stream)
        # The newest dated builder version, as a new workspace gets (not "PREVIEW").
        version = max(v for v in get_args(ImageBuilderVersion) if v[0].isdigit())
        settings = api_pb2.EnvironmentSettings(image_builder_version=version)
        name = request.deployment_name or "main"
        metadata = api_pb2.EnvironmentMetadata(name=name, settings=settings)
        await stream.send_message(
            api_pb2.EnvironmentGetOrCreateResponse(environment_id="en-1", metadata=metadata)
        )

    # -- apps ----------------------------------------------------------------------------
    async def AppCreate(self, stream) -> None:
        await self._recv("AppCreate", stream)
        app_id = self._id("ap")
        await stream.send_message(
            api_pb2.AppCreateResponse(app_id=app_id, app_page_url=f"https://modal.test/{app_id}")
        )

    async def AppGetOrCreate(self, stream) -> None:
        request = await self._recv("AppGetOrCreate", stream)
        if request.app_name not in self.deployed_apps:
            if request.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                raise GRPCError(Status.NOT_FOUND, f"App '{request.app_name}' not found")
            self.deployed_apps[request.app_name] = self._id("ap")
        await stream.send_message(
            api_pb2.AppGetOrCreateResponse(app_id=self.deployed_apps[request.app_name])
        )

    async def AppGetByDeploymentName(self, stream) -> None:
        request = await self._recv("AppGetByDeploymentName", stream)
        app_id = self.deployed_apps.get(request.name, "")
        await stream.send_message(api_pb2.AppGetByDeploymentNameResponse(app_id=app_id))

    async def AppPublish(self, stream) -> None:
        request = await self._recv("AppPublish", stream)
        self.app_objects[request.app_id] = {**request.function_ids, **request.class_ids}
        if request.app_state == api_pb2.APP_STATE_DEPLOYED:
            self.deployed_apps[request.name] = request.app_id
        await stream.send_message(api_pb2.AppPublishResponse(url=f"https://modal.test/{request.name}"))

    async def AppGetLayout(self, stream) -> None:
        request = await self._recv("AppGetLayout", stream)
        objects = self.app_objects.get(request.app_id, {})
        layout = api_pb2.AppLayout(function_ids={t: i for t, i in objects.items()})
        await stream.send_message(api_pb2.AppGetLayoutResponse(app_layout=layout))

    async def AppHeartbeat(self, stream) -> None:
        await self._recv("AppHeartbeat", stream)
        await stream.send_message(Empty())

    async def AppClientDisconnect(self, stream) -> None:
        await self._recv("AppClientDisconnect", stream)
        await stream.send_message(Empty())

    # -- functions -----------------------------------------------------------------------
    def _web_url(self, definition) -> str:
        if definition.webhook_config.type:
            return f"https://fake--{definition.function_name.replace('_', '-')}.modal.run"
        return ""

    async def FunctionPrecreate(self, stream) -> None:
        request = await self._recv("FunctionPrecreate", stream)
        function_id = request.existing_function_id or self._id("fu")
        web_url = self._web_url(request) if request.HasField("webhook_config") else ""
        await stream.send_message(
            api_pb2.FunctionPrecreateResponse(
                function_id=function_id,
                handle_metadata=api_pb2.FunctionHandleMetadata(
                    function_name=request.function_name,
                    function_type=request.function_type,
                    web_url=web_url,
                ),
            )
        )

    def _metadata(self, function_id: str) -> api_pb2.FunctionHandleMetadata:
        definition = self.functions[function_id]
        return api_pb2.FunctionHandleMetadata(
            function_name=definition.function_name,
            function_type=definition.function_type,
            web_url=definition.web_url,
            definition_id=f"de-{function_id}",
        )

    async def FunctionCreate(self, stream) -> None:
        """Keeps the definition as sent; `FakeModal.function(name)` returns the Function."""
        request = await self._recv("FunctionCreate", stream)
        function_id = request.existing_function_id or self._id("fu")
        if request.function_data.ranked_functions:
            data = api_pb2.FunctionData()
            data.CopyFrom(request.function_data)
            data.web_url = self._web_url(data)
            definition = api_pb2.Function()
            definition.CopyFrom(data.ranked_functions[0].function)
            definition.web_url = data.web_url
            response = api_pb2.FunctionCreateResponse(function_id=function_id, function_data=data)
        else:
            definition = api_pb2.Function()
            definition.CopyFrom(request.function)
            definition.web_url = self._web_url(definition)
            data = api_pb2.FunctionData(
                module_name=definition.module_name,
                function_name=definition.function_name,
                function_type=definition.function_type,
                web_url=definition.web_url,
                webhook_config=definition.webhook_config,
                implementation_name=definition.implementation_name,
                ranked_functions=[api_pb2.FunctionData.RankedFunction(rank=0, function=definition)],
            )
            response = api_pb2.FunctionCreateResponse(
                function_id=function_id, function=definition, function_data=data
            )
        self.functions[function_id] = definition
        self.function_data[function_id] = data
        response.handle_metadata.CopyFrom(self._metadata(function_id))
        await stream.send_message(response)

    async def FunctionGet(self, stream) -> None:
        request = await self._recv("FunctionGet", stream)
        app_id = self.deployed_apps.get(request.app_name)
        if app_id is None:
            raise GRPCError(Status.NOT_FOUND, f"App '{request.app_name}' not found")
        function_id = self.app_objects.get(app_id, {}).get(request.object_tag)
        if function_id is None:
            raise GRPCError(Status.NOT_FOUND, f"Function '{request.object_tag}' not found")
        await stream.send_message(
            api_pb2.FunctionGetResponse(
                function_id=function_id,
                handle_metadata=self._metadata(function_id),
                function=self.function_data[function_id],
            )
        )

    async def FunctionMap(self, stream) -> None:
        """Records each input's (args, kwargs); runs the function's handler if it has one."""
        request = await self._recv("FunctionMap", stream)
        call_id = self._id("fc")
        self.calls_by_fc[call_id] = request.function_id
        name = self.functions[request.function_id].function_name
        for item in request.pipelined_inputs:
            # modal pickles (args, kwargs); plain values unpickle without a client.
            args, kwargs = pickle.loads(item.input.args) if item.input.args else ((), {})
            self.function_inputs.append((name, tuple(args), dict(kwargs)))
            handler = self.function_handlers.get(name)
            if handler is not None:
                # A thread: the body may use the modal SDK, which talks to this very loop.
                loop = asyncio.get_running_loop()
                body = functools.partial(handler, *args, **kwargs)
                self.running[call_id] = loop.run_in_executor(None, body)
        inputs = [
            api_pb2.FunctionPutInputsResponseItem(idx=i, input_id=self._id("in"), input_jwt="jwt")
            for i, _ in enumerate(request.pipelined_inputs)
        ]
        await stream.send_message(
            api_pb2.FunctionMapResponse(
                function_call_id=call_id,
                pipelined_inputs=inputs,
                function_call_jwt="jwt",
                max_inputs_outstanding=1000,
            )
        )

    async def FunctionGetOutputs(self, stream) -> None:
        request = await self._recv("FunctionGetOutputs", stream)
        name = self.functions[self.calls_by_fc[request.function_call_id]].function_name
        running = self.running.get(request.function_call_id)
        if running is None:
            result = api_pb2.GenericResult(
                status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS,
                data=serialize(self.function_results.get(name)),
            )
        else:
            done, _ = await asyncio.wait([running], timeout=max(request.timeout, 0.1))
            if not done:  # still running: the SDK asks again
                await stream.send_message(api_pb2.FunctionGetOutputsResponse(outputs=[]))
                return
            error = running.exception()
            if error is None:
                result = api_pb2.GenericResult(
                    status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS,
                    data=serialize(running.result()),
                )
            else:
                result = api_pb2.GenericResult(
                    status=api_pb2.GenericResult.GENERIC_STATUS_FAILURE,
                    exception=f"{type(error).__name__}: {error}",
                )
        output = api_pb2.FunctionGetOutputsItem(
            input_id="in-0", idx=0, result=result, data_format=api_pb2.DATA_FORMAT_PICKLE
        )
        await stream.send_message(api_pb2.FunctionGetOutputsResponse(outputs=[output]))

    # -- images and mounts ---------------------------------------------------------------
    async def ImageGetOrCreate(self, stream) -> None:
        request = await self._recv("ImageGetOrCreate", stream)
        wanted = request.image.SerializeToString()
        found = [i for i, image in self.images.items() if image.SerializeToString() == wanted]
        image_id = found[0] if found else self._id("im")
        self.images[image_id] = request.image
        await stream.send_message(
            api_pb2.ImageGetOrCreateResponse(
                image_id=image_id,
                metadata=api_pb2.ImageMetadata(image_builder_version=request.builder_version),
            )
        )

    async def ImageJoinStreaming(self, stream) -> None:
        request = await self._recv("ImageJoinStreaming", stream)
        commands = "\n".join(self.images[request.image_id].dockerfile_commands)
        failure = next((err for cmd, err in self.image_failures.items() if cmd in commands), None)
        log = api_pb2.TaskLogs(data=f"building {request.image_id}\n", file_descriptor=1)
        if failure:
            result = api_pb2.GenericResult(
                status=api_pb2.GenericResult.GENERIC_STATUS_FAILURE, exception=failure
            )
        else:
            result = api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS)
        await stream.send_message(api_pb2.ImageJoinStreamingResponse(task_logs=[log]))
        await stream.send_message(api_pb2.ImageJoinStreamingResponse(result=result))

    async def MountGetOrCreate(self, stream) -> None:
        request = await self._recv("MountGetOrCreate", stream)
        mount_id = self._id("mo")
        self.mounts[mount_id] = [f.filename for f in request.files]
        await stream.send_message(
            api_pb2.MountGetOrCreateResponse(
                mount_id=mount_id,
                handle_metadata=api_pb2.MountHandleMetadata(content_checksum_sha256_hex="0" * 64),
            )
        )

    async def MountPutFile(self, stream) -> None:
        await self._recv("MountPutFile", stream)
        await stream.send_message(api_pb2.MountPutFileResponse(exists=True))

    async def MountBatchedCheckExistence(self, stream) -> None:
        await self._recv("MountBatchedCheckExistence", stream)
        # Nothing is missing: the fake keeps no file contents, only the names in MountGetOrCreate.
        await stream.send_message(api_pb2.MountBatchedCheckExistenceResponse())

    # -- volumes, secrets, dicts ---------------------------------------------------------
    async def VolumeGetOrCreate(self, stream) -> None:
        request = await self._recv("VolumeGetOrCreate", stream)
        name = request.deployment_name
        if name not in self.volumes:
            if request.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                raise GRPCError(Status.NOT_FOUND, f"Volume '{name}' not found")
            self.volumes[name] = self._id("vo")
        metadata = api_pb2.VolumeMetadata(name=name, version=request.version)
        await stream.send_message(
            api_pb2.VolumeGetOrCreateResponse(
                volume_id=self.volumes[name], version=request.version, metadata=metadata
            )
        )

    async def VolumeReload(self, stream) -> None:
        await self._recv("VolumeReload", stream)
        await stream.send_message(Empty())

    async def VolumeCommit(self, stream) -> None:
        await self._recv("VolumeCommit", stream)
        await stream.send_message(api_pb2.VolumeCommitResponse(skip_reload=False))

    async def VolumeHeartbeat(self, stream) -> None:
        await self._recv("VolumeHeartbeat", stream)
        await stream.send_message(Empty())

    async def SecretGetOrCreate(self, stream) -> None:
        request = await self._recv("SecretGetOrCreate", stream)
        kind = request.object_creation_type
        if kind in (
            api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL,
            api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP,
        ):
            secret_id = self._id("st")
        elif request.deployment_name in self.secrets:
            secret_id = self.secrets[request.deployment_name]
        elif kind == api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED:
            raise GRPCError(Status.NOT_FOUND, f"Secret '{request.deployment_name}' not found")
        else:
            secret_id = self.secrets[request.deployment_name] = self._id("st")
        self.secret_env.setdefault(secret_id, dict(request.env_dict))
        metadata = api_pb2.SecretMetadata(name=request.deployment_name)
        await stream.send_message(
            api_pb2.SecretGetOrCreateResponse(secret_id=secret_id, metadata=metadata)
        )

    async def DictGetOrCreate(self, stream) -> None:
        request = await self._recv("DictGetOrCreate", stream)
        name = request.deployment_name
        if name:
            _check_name(name, "Dict")
        if request.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL:
            dict_id = self._id("di")
        elif name in self.dicts:
            dict_id = self.dicts[name]
        elif request.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
            dict_id = self.dicts[name] = self._id("di")
        else:
            raise GRPCError(Status.NOT_FOUND, f"Dict '{name}' not found")
        self.dict_data.setdefault(dict_id, {e.key: e.value for e in request.data})
        await stream.send_message(
            api_pb2.DictGetOrCreateResponse(
                dict_id=dict_id, metadata=api_pb2.DictMetadata(name=name)
            )
        )

    async def DictHeartbeat(self, stream) -> None:
        await self._recv("DictHeartbeat", stream)
        await stream.send_message(Empty())

    async def DictGet(self, stream) -> None:
        request = await self._recv("DictGet", stream)
        data = self.dict_data[request.dict_id]
        await stream.send_message(
            api_pb2.DictGetResponse(value=data.get(request.key), found=request.key in data)
        )

    async def DictContains(self, stream) -> None:
        request = await self._recv("DictContains", stream)
        found = request.key in self.dict_data[request.dict_id]
        await stream.send_message(api_pb2.DictContainsResponse(found=found))

    async def DictUpdate(self, stream) -> None:
        request = await self._recv("DictUpdate", stream)
        data = self.dict_data[request.dict_id]
        if request.if_not_exists and any(u.key in data for u in request.updates):
            await stream.send_message(api_pb2.DictUpdateResponse(created=False))
            return
        for update in request.updates:
            data[update.key] = update.value
        await stream.send_message(api_pb2.DictUpdateResponse(created=True))

    async def DictPop(self, stream) -> None:
        request = await self._recv("DictPop", stream)
        data = self.dict_data[request.dict_id]
        found = request.key in data
        value = data.pop(request.key, None)
        await stream.send_message(api_pb2.DictPopResponse(value=value, found=found))

    async def DictLen(self, stream) -> None:
        request = await self._recv("DictLen", stream)
        await stream.send_message(api_pb2.DictLenResponse(len=len(self.dict_data[request.dict_id])))

    async def DictContents(self, stream) -> None:
        request = await self._recv("DictContents", stream)
        for key, value in list(self.dict_data[request.dict_id].items()):
            await stream.send_message(api_pb2.DictEntry(key=key, value=value))

    # -- sandboxes -----------------------------------------------------------------------
    def _sandbox(self, sandbox_id: str) -> FakeSandbox:
        if sandbox_id not in self.sandboxes:
            raise GRPCError(Status.NOT_FOUND, f"Sandbox {sandbox_id} not found")
        return self.sandboxes[sandbox_id]

    async def SandboxCreate(self, stream) -> None:
        request = await self._recv("SandboxCreate", stream)
        env = {}
        for secret_id in request.definition.secret_ids:
            env.update(self.secret_env.get(secret_id, {}))
        sandbox = self._create_sandbox(request, env=env, v2=False)
        await stream.send_message(api_pb2.SandboxCreateResponse(sandbox_id=sandbox.sandbox_id))

    async def SandboxCreateV2(self, stream) -> None:
        """V2 (CPU sandboxes by default): ids not of V1's shape, env sent inline."""
        request = await self._recv("SandboxCreateV2", stream)
        env = {}
        for source in request.secret_sources:
            env.update(self.secret_env.get(source.secret_id, {}) if source.secret_id else {})
            env.update(source.env.contents)
        sandbox = self._create_sandbox(request, env=env, v2=True)
        response = api_pb2.SandboxCreateV2Response(sandbox_id=sandbox.sandbox_id)
        if sandbox.scheduled:
            response.task_id = sandbox.task_id
        await stream.send_message(response)

    def _create_sandbox(self, request: Any, *, env: dict[str, str], v2: bool) -> FakeSandbox:
        _check_tags({t.tag_name: t.tag_value for t in request.tags})
        _check_resources(request.definition)
        name = request.definition.name
        if name:
            _check_name(name, "Sandbox")
            if any(s.definition.name == name and s.app_id == request.app_id and s.result is None
                   for s in self.sandboxes.values()):  # like Modal: unique among live ones
                raise GRPCError(Status.ALREADY_EXISTS, f"Sandbox with name '{name}' exists")
        # modal routes on the id's shape: V1 is `sb-` + 22 characters.
        sandbox_id = "sb-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24 if v2 else 22))
        sandbox = FakeSandbox(
            v2=v2,
            env=env,
            sandbox_id=sandbox_id,
            app_id=request.app_id,
            definition=request.definition,
            tags={t.tag_name: t.tag_value for t in request.tags},
            created_at=time.time(),
            server=self.server,
            scheduled=self.server.schedule_sandboxes,
            changed=asyncio.Condition(),
        )
        self.sandboxes[sandbox_id] = sandbox
        # Like Modal: the sandbox ends with status TIMEOUT once its `timeout` has passed.
        asyncio.get_running_loop().call_later(
            request.definition.timeout_secs, lambda: asyncio.ensure_future(sandbox._time_out())
        )
        self.server.on_sandbox_create(sandbox)
        return sandbox

    async def SandboxGetTaskId(self, stream) -> None:
        await self._sandbox_get_task_id(stream, "SandboxGetTaskId")

    async def _sandbox_get_task_id(self, stream, name: str) -> None:
        request = await self._recv(name, stream)
        sandbox = self._sandbox(request.sandbox_id)
        if not sandbox.scheduled:
            await stream.send_message(api_pb2.SandboxGetTaskIdResponse())
            return
        response = api_pb2.SandboxGetTaskIdResponse(task_id=sandbox.task_id)
        if sandbox.result is not None:
            response.task_result.CopyFrom(sandbox.result)
        await stream.send_message(response)

    async def SandboxWait(self, stream) -> None:
        await self._sandbox_wait(stream, "SandboxWait")

    async def _sandbox_wait(self, stream, name: str) -> None:
        request = await self._recv(name, stream)
        sandbox = self._sandbox(request.sandbox_id)
        assert sandbox.changed is not None
        if sandbox.result is None and request.timeout > 0:
            async with sandbox.changed:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        sandbox.changed.wait_for(lambda: sandbox.result is not None),
                        min(request.timeout, 5),
                    )
        await stream.send_message(api_pb2.SandboxWaitResponse(result=sandbox.result))

    async def SandboxTerminate(self, stream) -> None:
        await self._sandbox_terminate(stream, "SandboxTerminate")

    async def _sandbox_terminate(self, stream, name: str) -> None:
        request = await self._recv(name, stream)
        sandbox = self._sandbox(request.sandbox_id)
        before = self.server.on_terminate(sandbox)
        if inspect.isawaitable(before):
            await before
        await sandbox._finish(  # a sandbox that has already ended keeps its result
            api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_TERMINATED)
        )
        await stream.send_message(api_pb2.SandboxTerminateResponse())

    async def SandboxGetLogs(self, stream) -> None:
        """Entries are numbered from 1; stream from after last_entry_id; EOF once finished."""
        request = await self._recv("SandboxGetLogs", stream)
        sandbox = self._sandbox(request.sandbox_id)
        assert sandbox.changed is not None
        stdout = request.file_descriptor == api_pb2.FILE_DESCRIPTOR_STDOUT
        lines = sandbox.stdout if stdout else sandbox.stderr
        sent = int(request.last_entry_id or 0)
        deadline = time.monotonic() + (request.timeout or 55)
        while True:
            while sent < len(lines):
                sent += 1
                item = api_pb2.TaskLogs(
                    data=lines[sent - 1], file_descriptor=request.file_descriptor
                )
                await stream.send_message(api_pb2.TaskLogsBatch(entry_id=str(sent), items=[item]))
            if sandbox.result is not None:
                await stream.send_message(api_pb2.TaskLogsBatch(entry_id=str(sent), eof=True))
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            async with sandbox.changed:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(sandbox.changed.wait(), remaining)

    async def SandboxStdinWrite(self, stream) -> None:
        request = await self._recv("SandboxStdinWrite", stream)
        sandbox = self._sandbox(request.sandbox_id)
        if sandbox.result is not None:
            raise GRPCError(Status.FAILED_PRECONDITION, "Sandbox has already terminated")
        # Like Modal: writes are numbered (`index`, from 1 per writer) and a number already
        # seen is a retry, acknowledged and dropped. A second writer restarting at 1 loses data.
        if request.index <= sandbox.stdin_index:
            sandbox.stdin_dropped.append(request.input)
            await stream.send_message(api_pb2.SandboxStdinWriteResponse())
            return
        sandbox.stdin_index = request.index
        sandbox.stdin.append(request.input)
        sandbox.stdin_closed = sandbox.stdin_closed or request.eof
        self.server.on_stdin(sandbox, request.input)
        await stream.send_message(api_pb2.SandboxStdinWriteResponse())

    async def SandboxList(self, stream) -> None:
        await self._sandbox_list(stream, "SandboxList")

    async def _sandbox_list(self, stream, name: str) -> None:
        request = await self._recv(name, stream)
        wanted = {t.tag_name: t.tag_value for t in request.tags}
        infos = [
            api_pb2.SandboxInfo(
                id=s.sandbox_id,
                created_at=s.created_at,
                app_id=s.app_id,
                task_info=api_pb2.TaskInfo(result=s.result),
            )
            for s in self.sandboxes.values()
            if (request.include_finished or s.result is None)
            and (not request.app_id or s.app_id == request.app_id)
            and all(s.tags.get(k) == v for k, v in wanted.items())
            and (not request.before_timestamp or s.created_at < request.before_timestamp)
        ]
        await stream.send_message(api_pb2.SandboxListResponse(sandboxes=infos))

    async def SandboxTagsGet(self, stream) -> None:
        await self._sandbox_tags_get(stream, "SandboxTagsGet")

    async def _sandbox_tags_get(self, stream, name: str) -> None:
        request = await self._recv(name, stream)
        sandbox = self._sandbox(request.sandbox_id)
        tags = [api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in sandbox.tags.items()]
        await stream.send_message(api_pb2.SandboxTagsGetResponse(tags=tags))


    # -- V2 sandboxes: the same control plane calls, and the task command router ---------
    async def SandboxGetTaskIdV2(self, stream) -> None:
        await self._sandbox_get_task_id(stream, "SandboxGetTaskIdV2")

    async def SandboxWaitV2(self, stream) -> None:
        await self._sandbox_wait(stream, "SandboxWaitV2")

    async def SandboxTerminateV2(self, stream) -> None:
        await self._sandbox_terminate(stream, "SandboxTerminateV2")

    async def SandboxListV2(self, stream) -> None:
        await self._sandbox_list(stream, "SandboxListV2")

    async def SandboxTagsGetV2(self, stream) -> None:
        await self._sandbox_tags_get(stream, "SandboxTagsGetV2")

    async def AuthTokenGet(self, stream) -> None:
        """A JWT whose `exp` modal's AuthTokenManager reads (the fake never checks it)."""
        await self._recv("AuthTokenGet", stream)
        await stream.send_message(api_pb2.AuthTokenGetResponse(token=_jwt(time.time() + 3600)))

    async def SandboxGetCommandRouterAccess(self, stream) -> None:
        request = await self._recv("SandboxGetCommandRouterAccess", stream)
        if request.sandbox_id:
            self._sandbox(request.sandbox_id)
        await stream.send_message(api_pb2.SandboxGetCommandRouterAccessResponse(
            url=self.server.router_url, jwt=ROUTER_JWT
        ))


@patch_mock_servicer
class FakeTaskRouter(task_command_router_grpc.TaskCommandRouterBase):
    """The worker-side task command router of V2 sandboxes: their stdin and stdout/stderr.

    Like Modal's, it keeps only the most recent `FakeModal.v2_output_keep` bytes of each
    stream: a reader asking for older output gets the oldest byte still kept, and
    `starting_offset` says where that is. Stdin writes carry their byte `offset`; bytes the
    router already has are dropped, as a retry's would be.
    """

    def __init__(self, server: FakeModal) -> None:
        self.server = server

    def _sandbox(self, task_id: str) -> FakeSandbox:
        for sandbox in self.server.sandboxes.values():
            if sandbox.v2 and sandbox.task_id == task_id:
                return sandbox
        raise GRPCError(Status.NOT_FOUND, f"Task {task_id} not found")

    async def recv_request(self, event: RecvRequest) -> None:
        if event.metadata.get("authorization") != f"Bearer {ROUTER_JWT}":
            raise GRPCError(Status.UNAUTHENTICATED, "bad router token")

    async def SandboxStdinWriteV2(self, stream) -> None:
        request = await stream.recv_message()
        self.server.servicer.calls.append(("SandboxStdinWriteV2", request))
        sandbox = self._sandbox(request.task_id)
        if sandbox.result is not None:
            raise GRPCError(Status.FAILED_PRECONDITION, "Sandbox has already terminated")
        have = sum(len(chunk) for chunk in sandbox.stdin)
        if request.offset > have:
            raise GRPCError(Status.INVALID_ARGUMENT, f"stdin offset {request.offset} > {have}")
        fresh = request.data[have - request.offset:]
        if len(fresh) < len(request.data):
            sandbox.stdin_dropped.append(request.data[: have - request.offset])
        if fresh:
            sandbox.stdin.append(fresh)
            self.server.on_stdin(sandbox, fresh)
        sandbox.stdin_closed = sandbox.stdin_closed or request.eof
        await stream.send_message(task_command_router_pb2.SandboxStdinWriteV2Response())

    async def SandboxStdioReadV2(self, stream) -> None:
        request = await stream.recv_message()
        self.server.servicer.calls.append(("SandboxStdioReadV2", request))
        sandbox = self._sandbox(request.task_id)
        assert sandbox.changed is not None
        stdout = task_command_router_pb2.SANDBOX_STDIO_FILE_DESCRIPTOR_STDOUT
        chunks = sandbox.stdout if request.file_descriptor == stdout else sandbox.stderr
        offset = request.offset
        while True:
            data = "".join(chunks).encode()
            start = max(offset, len(data) - self.server.v2_output_keep)
            if start < len(data):
                await stream.send_message(task_command_router_pb2.SandboxStdioReadV2Response(
                    data=data[start:], starting_offset=start
                ))
                offset = len(data)
            elif sandbox.result is not None:
                return
            else:
                async with sandbox.changed:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(sandbox.changed.wait(), 5)


class _Server(grpclib.server.Server):
    """A grpclib server that closes its connections when closed: modal keeps a V2 router
    channel open until it has been idle a while, so the client may not close them."""

    def _protocol_factory(self) -> Any:
        protocol = super()._protocol_factory()
        made = protocol.connection_made

        def connection_made(transport: Any) -> None:
            self.transports.append(transport)
            made(transport)

        protocol.connection_made = connection_made  # type: ignore[method-assign]
        return protocol

    transports: list[Any]

    def close(self) -> None:
        super().close()
        for transport in getattr(self, "transports", []):
            transport.close()


class FakeModal:
    """The fake control plane, served by grpclib on its own event loop in a daemon thread."""

    def __init__(self, *, token_id: str = TOKEN_ID, token_secret: str = TOKEN_SECRET) -> None:
        self.token_id = token_id
        self.token_secret = token_secret
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.schedule_sandboxes = True
        #: Seconds added to every RPC: plays the network between a client and Modal's
        #: control plane (bench/proxy_fleet.py); the answers themselves stay immediate.
        self.latency = 0.0
        self.router_port = _free_port()
        self.router_url = f"http://127.0.0.1:{self.router_port}"
        #: Bytes of each V2 stdout/stderr the router keeps (Modal keeps recent output only).
        self.v2_output_keep = 1 << 20
        self.servicer = FakeModalServicer(self)
        self.router = FakeTaskRouter(self)
        #: Hooks: called on the server loop when a sandbox is created / gets stdin.
        self.on_sandbox_create: Callable[[FakeSandbox], None] = lambda sandbox: None
        self.on_stdin: Callable[[FakeSandbox, bytes], None] = lambda sandbox, data: None
        #: Called (and awaited, if it returns an awaitable) before a terminate takes effect:
        #: `lambda sb: sb._time_out()` plays a timeout that wins the race.
        self.on_terminate: Callable[[FakeSandbox], Any] = lambda sandbox: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: grpclib.server.Server | None = None
        self._router: grpclib.server.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> FakeModal:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                server = grpclib.server.Server([self.servicer])
                listen(server, RecvRequest, self.servicer.recv_request)
                loop.run_until_complete(server.start(host="127.0.0.1", port=self.port))
                self._server = server
                router = _Server([self.router])
                router.transports = []
                listen(router, RecvRequest, self.router.recv_request)
                loop.run_until_complete(router.start(host="127.0.0.1", port=self.router_port))
                self._router = router
            except BaseException as exc:  # surfaced by start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            for each in (router, server):
                each.close()
                loop.run_until_complete(each.wait_closed())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-modal", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> FakeModal:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` (a coroutine function) on the server's loop and wait for it.

        From the loop itself (the `on_sandbox_create`/`on_stdin` hooks) it is scheduled.
        """
        assert self._loop is not None
        if threading.current_thread() is self._thread:
            return self._loop.create_task(fn(*args))
        return asyncio.run_coroutine_threadsafe(fn(*args), self._loop).result(10)

    # -- what the SDK needs --------------------------------------------------------------
    def env(self, config_path: str) -> dict[str, str]:
        """The complete MODAL_* environment that points the SDK here and nowhere else."""
        return {
            "MODAL_SERVER_URL": self.url,
            "MODAL_TOKEN_ID": self.token_id,
            "MODAL_TOKEN_SECRET": self.token_secret,
            "MODAL_CONFIG_PATH": config_path,  # a missing file: no profile from ~/.modal.toml
            "MODAL_ENVIRONMENT": "main",
            # modal's default, as on a user's machine: CPU sandboxes use V2 (the task command
            # router), GPU sandboxes V1.
        }

    @contextlib.contextmanager
    def environ(self, config_path: str = "/nonexistent/modal.toml") -> Iterator[None]:
        with isolated_modal_env(self.env(config_path)):
            yield

    # -- state for assertions and scripting ----------------------------------------------
    def requests(self, method: str) -> list[Any]:
        return [req for name, req in self.servicer.calls if name == method]

    @property
    def method_names(self) -> list[str]:
        return [name for name, _ in self.servicer.calls]

    @property
    def sandboxes(self) -> dict[str, FakeSandbox]:
        return self.servicer.sandboxes

    def add_secret(self, name: str, env: dict[str, str] | None = None) -> str:
        secret_id = self.servicer.secrets[name] = self.servicer._id("st")
        self.servicer.secret_env[secret_id] = dict(env or {})
        return secret_id

    def fail_image_build(self, command_substring: str, message: str) -> None:
        """Make the build of any image whose Dockerfile contains `command_substring` fail."""
        self.servicer.image_failures[command_substring] = message

    def function(self, name: str) -> api_pb2.Function:
        """The last definition created for the function `name` (FunctionCreate)."""
        matches = [f for f in self.servicer.functions.values() if f.function_name == name]
        if not matches:
            raise KeyError(f"no function {name!r} was created")
        return matches[-1]

    @property
    def function_handlers(self) -> dict[str, Callable[..., Any]]:
        return self.servicer.function_handlers

    def function_calls(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """(args, kwargs) of every call (`remote`, `spawn`) of the function `name`."""
        return [(a, k) for n, a, k in self.servicer.function_inputs if n == name]

    def dict_items(self, name: str) -> dict[Any, Any]:
        """The content of the named modal.Dict, unpickled ({} if it does not exist)."""
        dict_id = self.servicer.dicts.get(name)
        data = self.servicer.dict_data.get(dict_id, {}) if dict_id else {}
        return {pickle.loads(k): pickle.loads(v) for k, v in data.items()}

    def secret_env(self, secret_id: str) -> dict[str, str]:
        return self.servicer.secret_env.get(secret_id, {})


@contextlib.contextmanager
def isolated_modal_env(env: dict[str, str] | None = None) -> Iterator[None]:
    """Replace every MODAL_* variable by `env` and forget modal's cached config and client.

    modal reads `~/.modal.toml` (or MODAL_CONFIG_PATH) at import and caches a client per
    process; both are reset here so that nothing from the developer's machine leaks in.
    """
    import modal.config as modal_config

    saved_env = {k: v for k, v in os.environ.items() if k.startswith("MODAL_")}
    saved = (modal_config._user_config, modal_config._profile, modal_config.user_config_path)
    for key in saved_env:
        del os.environ[key]
    os.environ.update(env or {})
    modal_config.user_config_path = os.environ.get("MODAL_CONFIG_PATH", "/nonexistent/modal.toml")
    modal_config._user_config = modal_config._read_user_config()
    modal_config._profile = modal_config._config_active_profile()
    _close_env_client()
    try:
        yield
    finally:
        _close_env_client()
        for key in [k for k in os.environ if k.startswith("MODAL_")]:
            del os.environ[key]
        os.environ.update(saved_env)
        modal_config._user_config, modal_config._profile, modal_config.user_config_path = saved


def _close_env_client() -> None:
    """Close the client modal cached from the environment (the next call makes a new one)."""
    from modal._utils.async_utils import synchronizer
    from modal.client import _Client

    client = _Client._client_from_env
    if client is not None:
        synchronizer._translate_out(client).close()
    _Client._set_env_client(None)


# -- volume files: what `Volume.listdir` and `Volume.read_file` need (results, pull) -------
# Kept in one block: a named volume's files are a host folder the test fills (real links,
# FIFOs and all, reported as Modal reports them); blocks are served over HTTP on 127.0.0.1
# like Modal's block URLs.
#
#     fake.volume_files("sandbox-data", tmp_path / "data")   # the volume's content


def _fake_volume_files(self: FakeModal, name: str, folder: os.PathLike[str] | str) -> str:
    """Back the named volume (created if missing) with `folder`; returns its id."""
    servicer = self.servicer
    volume_id = servicer.volumes.setdefault(name, servicer._id("vo"))
    servicer.__dict__.setdefault("volume_folders", {})[volume_id] = os.fspath(folder)
    return volume_id


def _volume_entries(root: str, path: str, recursive: bool) -> list[api_pb2.FileEntry]:
    import stat as stat_

    kinds = {stat_.S_IFREG: api_pb2.FileEntry.FileType.FILE,
             stat_.S_IFDIR: api_pb2.FileEntry.FileType.DIRECTORY,
             stat_.S_IFLNK: api_pb2.FileEntry.FileType.SYMLINK,
             stat_.S_IFIFO: api_pb2.FileEntry.FileType.FIFO,
             stat_.S_IFSOCK: api_pb2.FileEntry.FileType.SOCKET}
    rel = path.strip("/")
    if ".." in rel.split("/"):
        raise GRPCError(Status.INVALID_ARGUMENT, "bad path")

    def entry(name: str) -> api_pb2.FileEntry:
        st = os.lstat(os.path.join(root, name))
        kind = kinds.get(stat_.S_IFMT(st.st_mode), api_pb2.FileEntry.FileType.UNSPECIFIED)
        return api_pb2.FileEntry(path=name, type=kind, mtime=int(st.st_mtime), size=st.st_size)

    full = os.path.join(root, rel)
    if not os.path.lexists(full):
        raise GRPCError(Status.NOT_FOUND, f"No such file or directory: {path}")
    if not os.path.isdir(full) or os.path.islink(full):
        return [entry(rel)]
    out, todo = [], [rel]
    while todo:
        folder = todo.pop()
        for name in sorted(os.listdir(os.path.join(root, folder))):
            child = f"{folder}/{name}" if folder else name
            out.append(entry(child))
            if recursive and out[-1].type == api_pb2.FileEntry.FileType.DIRECTORY:
                todo.append(child)
    return out


async def _volume_list_files(self: FakeModalServicer, stream) -> None:
    request = await self._recv("VolumeListFiles", stream)
    root = self.__dict__.get("volume_folders", {}).get(request.volume_id)
    if root is None:
        raise GRPCError(Status.NOT_FOUND, "volume has no files")
    entries = _volume_entries(root, request.path, request.recursive)
    await stream.send_message(api_pb2.VolumeListFilesResponse(entries=entries))


async def _volume_list_files2(self: FakeModalServicer, stream) -> None:
    request = await self._recv("VolumeListFiles2", stream)
    root = self.__dict__.get("volume_folders", {}).get(request.volume_id)
    if root is None:
        raise GRPCError(Status.NOT_FOUND, "volume has no files")
    entries = _volume_entries(root, request.path, request.recursive)
    await stream.send_message(api_pb2.VolumeListFiles2Response(entries=entries))


_BLOCKS: dict[str, bytes] = {}
_BLOCK_SERVER: list[str] = []  # the base URL, once started


def _block_url(data: bytes) -> str:
    """Serve `data` at a fresh URL on a loopback HTTP server (one per test process)."""
    if not _BLOCK_SERVER:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = _BLOCKS.get(self.path.rsplit("/", 1)[-1])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        _BLOCK_SERVER.append(f"http://127.0.0.1:{server.server_address[1]}/blocks/")
    key = secrets.token_hex(8)
    _BLOCKS[key] = data
    return _BLOCK_SERVER[0] + key


async def _volume_get_file2(self: FakeModalServicer, stream) -> None:
    from modal.volume import BLOCK_SIZE

    request = await self._recv("VolumeGetFile2", stream)
    root = self.__dict__.get("volume_folders", {}).get(request.volume_id)
    rel = request.path.strip("/")
    if root is None or ".." in rel.split("/"):
        raise GRPCError(Status.NOT_FOUND, f"No such file: {request.path}")
    try:  # like the real volume: a regular file, never through a link
        fd = os.open(os.path.join(root, rel), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        raise GRPCError(Status.NOT_FOUND, f"No such file: {request.path}") from None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read()
    urls = [_block_url(data[i:i + BLOCK_SIZE]) for i in range(0, len(data), BLOCK_SIZE)]
    await stream.send_message(
        api_pb2.VolumeGetFile2Response(get_urls=urls, size=len(data), start=0, len=len(data))
    )


FakeModalServicer.VolumeListFiles = _volume_list_files  # type: ignore[method-assign]
FakeModalServicer.VolumeListFiles2 = _volume_list_files2  # type: ignore[method-assign]
FakeModalServicer.VolumeGetFile2 = _volume_get_file2  # type: ignore[method-assign]
FakeModal.volume_files = _fake_volume_files  # type: ignore[attr-defined]
