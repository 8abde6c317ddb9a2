using Google.Protobuf;
using Grpc.AspNetCore.Server.Model;
using Grpc.Core;
using Migration.Control.V1;

namespace Migration.Target.Api;

/// <summary>
/// Binds the Agent service's methods (the generated <see cref="Agent.BindService(ServiceBinderBase, Agent.AgentBase)"/>)
/// to <see cref="AgentService"/>, each with its request checked as it is parsed: Grpc.AspNetCore's own binding reports a
/// request that does not parse as Unknown, this one as InvalidArgument, which is what it is. It replaces that binding
/// (<see cref="AgentApiServiceCollectionExtensions.AddAgentApi"/>), which would bind every method a second time.
/// </summary>
public sealed partial class AgentServiceBinding(ILogger<AgentServiceBinding> logger) : IServiceMethodProvider<AgentService>
{
    public void OnServiceMethodDiscovery(ServiceMethodProviderContext<AgentService> context) =>
        // No instance: the binder takes each method's implementation from AgentService itself, called on the instance
        // Grpc.AspNetCore activates for the call.
        Agent.BindService(new Binder(context, this), null!);

    private static UnaryServerMethod<AgentService, TRequest, TResponse> Implementation<TRequest, TResponse>(Method<TRequest, TResponse> method)
        where TRequest : class
        where TResponse : class =>
        (typeof(Agent.AgentBase).GetMethod(method.Name, [typeof(TRequest), typeof(ServerCallContext)])
            ?? throw new InvalidOperationException($"{method.FullName} has no implementation on {nameof(Agent.AgentBase)}"))
        .CreateDelegate<UnaryServerMethod<AgentService, TRequest, TResponse>>();

    private static ServerStreamingServerMethod<AgentService, TRequest, TResponse> StreamingImplementation<TRequest, TResponse>(Method<TRequest, TResponse> method)
        where TRequest : class
        where TResponse : class =>
        (typeof(Agent.AgentBase).GetMethod(method.Name, [typeof(TRequest), typeof(IServerStreamWriter<TResponse>), typeof(ServerCallContext)])
            ?? throw new InvalidOperationException($"{method.FullName} has no implementation on {nameof(Agent.AgentBase)}"))
        .CreateDelegate<ServerStreamingServerMethod<AgentService, TRequest, TResponse>>();

    /// <summary><paramref name="method"/> with a request parser that refuses a malformed request as InvalidArgument.</summary>
    private Method<TRequest, TResponse> Checked<TRequest, TResponse>(Method<TRequest, TResponse> method)
        where TRequest : class
        where TResponse : class
    {
        var parse = method.RequestMarshaller.ContextualDeserializer;
        var request = Marshallers.Create(method.RequestMarshaller.ContextualSerializer, context =>
        {
            try
            {
                return parse(context);
            }
            catch (InvalidProtocolBufferException ex)
            {
                LogMalformed(method.FullName, ex.Message);
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"malformed {typeof(TRequest).Name} in {method.FullName}: {ex.Message}"));
            }
        });
        return new Method<TRequest, TResponse>(method.Type, method.ServiceName, method.Name, request, method.ResponseMarshaller);
    }

    [LoggerMessage(EventId = 503, Level = LogLevel.Warning, Message = "{Method} refused: malformed request ({Detail})")]
    private partial void LogMalformed(string method, string detail);

    private sealed class Binder(ServiceMethodProviderContext<AgentService> context, AgentServiceBinding binding) : ServiceBinderBase
    {
        /// <summary>Routing metadata Grpc.AspNetCore gives each method: gRPC calls are POSTs.</summary>
        private static readonly object[] s_metadata = [new HttpMethodMetadata(["POST"])];

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, UnaryServerMethod<TRequest, TResponse>? handler) =>
            context.AddUnaryMethod(binding.Checked(method), s_metadata, Implementation(method));

        // Server streaming (WatchMigration): one request, checked as a unary one is, then a stream of replies.
        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ServerStreamingServerMethod<TRequest, TResponse>? handler) =>
            context.AddServerStreamingMethod(binding.Checked(method), s_metadata, StreamingImplementation(method));

        // The Agent service has no client-streaming or duplex method; one added to the proto needs its binding here.
        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ClientStreamingServerMethod<TRequest, TResponse>? handler) =>
            throw new NotSupportedException($"{method.FullName}: client-streaming methods are not bound");

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, DuplexStreamingServerMethod<TRequest, TResponse>? handler) =>
            throw new NotSupportedException($"{method.FullName}: streaming methods are not bound");
    }
}
