using Grpc.AspNetCore.Server.Model;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Migration.Engine.Contract;

namespace Migration.Target.Api;

public static class AgentApiServiceCollectionExtensions
{
    /// <summary>
    /// The Agent service on Grpc.AspNetCore (map it with <c>MapGrpcService&lt;AgentService&gt;</c>): messages bounded by
    /// <see cref="ControlApi.MaxMessageBytes"/> both ways, every call's failure made its status by <see cref="CallStatusInterceptor"/>,
    /// its methods bound by <see cref="AgentServiceBinding"/>.
    /// </summary>
    public static IServiceCollection AddAgentApi(this IServiceCollection services)
    {
        services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = ControlApi.MaxMessageBytes;
            o.MaxSendMessageSize = ControlApi.MaxMessageBytes;
            o.Interceptors.Add<CallStatusInterceptor>();
        });
        // Grpc.AspNetCore's binding of every service (an open generic) would bind Agent's methods a second time.
        services.RemoveAll(typeof(IServiceMethodProvider<>));
        services.AddSingleton<IServiceMethodProvider<AgentService>, AgentServiceBinding>();
        services.AddSingleton<AgentService>();
        return services;
    }
}
