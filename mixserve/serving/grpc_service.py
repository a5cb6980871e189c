"""gRPC ingress from proto/mixserve.proto: streaming Generate, ListModels, standard health and
reflection. The server runs on an event loop of its own, in a thread of the ingress replica; each
Generate runs its request on the router's loop (the replica's, beside the HTTP routes) and takes the
chunks back. On the router's loop, which is never idle while tokens stream, gRPC's server noticed a
client's cancel late in about one try in four, at times only when the request ended; on its own
loop, within 0.02 s in 30 of 30 (docs/serving.md, "Errors")."""
from __future__ import annotations

import asyncio
import threading
from contextlib import aclosing

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mixserve.actors.mailbox import Mailbox
from mixserve.proto import SERVICE, pb2, pb2_grpc
from mixserve.router.request import GenerateRequest, RequestError
from mixserve.router.result import GenerateResult

from .service import CHUNKS_AHEAD, EnsembleService

STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          404: grpc.StatusCode.NOT_FOUND, 429: grpc.StatusCode.RESOURCE_EXHAUSTED, 500: grpc.StatusCode.INTERNAL,
          503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}


class EnsembleServicer(pb2_grpc.EnsembleServicer):
    def __init__(self, service: EnsembleService, home: asyncio.AbstractEventLoop):
        self.service = service
        self.home = home  # the router's loop

    async def Generate(self, request, context):
        """Chunks written with context.write from one coroutine: when the client cancels, gRPC cancels
        this task wherever it awaits, and closing the stream ends the samples and frees their
        sessions on every member (tests/serving/test_grpc_service.py cancels it as gRPC does)."""
        try:
            owner = self._authorize(context)
            plan = self.service.validate(GenerateRequest(**_fields(_decoded(request))), owner)
            async with aclosing(self._stream(plan)) as items:
                async for item in items:
                    await context.write(_usage_chunk(item) if isinstance(item, GenerateResult) else pb2.GenerateChunk(
                        index=item.index, text=item.text, token_ids=item.token_ids, member=item.member,
                        finish_reason=item.finish_reason or ""))
        except RequestError as e:
            await context.abort(STATUS.get(e.status, grpc.StatusCode.INVALID_ARGUMENT), str(e))

    async def _stream(self, plan):
        """The service's stream of the plan, run on the router's loop; closing this closes it there."""
        arrived = Mailbox(bound=CHUNKS_AHEAD)

        # On the router's loop; what fails there is raised on gRPC's side (a RequestError is answered).
        pumping = asyncio.run_coroutine_threadsafe(arrived.pour(self.service.stream(plan)), self.home)
        try:
            async for item in arrived:
                yield item
        finally:
            pumping.cancel()  # a client gone: the router's stream closes, its samples end, sessions freed

    def _authorize(self, context) -> str:
        return self.service.authorize(dict(context.invocation_metadata()).get("authorization"))

    async def ListModels(self, request, context):
        try:
            self._authorize(context)
            _decoded(request)
        except RequestError as e:
            await context.abort(STATUS[e.status], str(e))
        cards = [pb2.ModelCard(id=m["id"], model=m.get("model", ""), weight=m.get("weight", 1.0),
                               tokenizer=m.get("tokenizer", ""))
                 for m in self.service.models()]
        return pb2.ListModelsResponse(models=cards)


class Undecodable:
    """What arrives in place of a request protobuf could not decode: a proto3 string must be UTF-8,
    and gRPC's own decoding answered a client's bad bytes with UNKNOWN instead of INVALID_ARGUMENT."""

    def __init__(self, message_type, error: Exception):
        self.why = f"the request is no {message_type.DESCRIPTOR.name} (it does not decode: {error})"


def _decoder(message_type):
    def decode(data: bytes):
        try:
            return message_type.FromString(data)
        except DecodeError as e:
            return Undecodable(message_type, e)

    return decode


def _decoded(request):
    if isinstance(request, Undecodable):
        raise RequestError(request.why)
    return request


def _handlers(servicer: EnsembleServicer) -> grpc.GenericRpcHandler:
    """The Ensemble service as pb2_grpc's add_EnsembleServicer_to_server registers it, but decoding
    requests with `_decoder`."""
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Generate": grpc.unary_stream_rpc_method_handler(
            servicer.Generate, request_deserializer=_decoder(pb2.GenerateRequest),
            response_serializer=pb2.GenerateChunk.SerializeToString),
        "ListModels": grpc.unary_unary_rpc_method_handler(
            servicer.ListModels, request_deserializer=_decoder(pb2.ListModelsRequest),
            response_serializer=pb2.ListModelsResponse.SerializeToString)})


def _fields(request) -> dict:
    """Proto3 leaves unset scalars at zero; map zeros that mean "unset" to the request defaults."""
    s = request.sampling
    fields = {"prompt": request.prompt or None, "model": request.model or None, "method": request.method or None,
              "weights": dict(request.weights) or None, "n": request.n or 1,
              "messages": [{"role": m.role, "content": m.content} for m in request.messages] or None,
              "temperature": s.temperature if s.HasField("temperature") else 1.0,
              "top_p": s.top_p or 1.0, "top_k": s.top_k, "max_tokens": s.max_tokens or 16, "stop": tuple(s.stop),
              "seed": s.seed if s.HasField("seed") else None}
    if request.member:
        fields["member"] = request.member
    if request.session:
        fields["session"] = request.session
    if request.HasField("token_healing"):
        fields["token_healing"] = request.token_healing
    return fields


def _usage_chunk(result: GenerateResult):
    u = result.usage
    return pb2.GenerateChunk(usage=pb2.Usage(
        prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
        member_forward_calls=u.member_forward_calls, router_round_trips=u.router_round_trips,
        member_tokens=u.member_tokens), method=result.method, weights=result.weights)


async def start_grpc(service: EnsembleService, host: str, port: int) -> grpc.aio.Server:
    """The gRPC server, started on an event loop of its own in a daemon thread (the module's
    docstring says why); its Generate calls run their requests on this, the caller's, loop. A request
    message over the config's max_body_bytes (its bound on an HTTP body too) is refused by gRPC itself,
    RESOURCE_EXHAUSTED, before it is decoded."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="mixserve-grpc", daemon=True).start()
    home = asyncio.get_running_loop()
    started = asyncio.run_coroutine_threadsafe(_serve(service, home, host, port), loop)
    try:
        return await asyncio.wrap_future(started)
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)  # nothing listens: no thread left behind
        raise


async def _serve(service: EnsembleService, home: asyncio.AbstractEventLoop, host: str, port: int) -> grpc.aio.Server:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", service.config.max_body_bytes)])
    server.add_generic_rpc_handlers((_handlers(EnsembleServicer(service, home)),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise RuntimeError(f"cannot listen for gRPC on {host}:{port}")
    await server.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server
