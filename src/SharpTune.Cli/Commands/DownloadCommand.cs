// `sharptune download <repo-id>`: fetches a model (or dataset) repo from the Hugging Face Hub with resume and hash
// checks (torchtune's `tune download`). The token comes from --hf-token or HF_TOKEN and is never printed;
// HF_ENDPOINT points at a mirror.
using System.ComponentModel;
using SharpTune.Hub;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary>Downloads a Hub repo.</summary>
internal sealed class DownloadCommand(CliServices services) : Command<DownloadCommand.Settings>
{
    /// <summary>Arguments of <c>download</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<repo-id>")]
        [Description("Hub repo id, e.g. meta-llama/Llama-3.2-1B-Instruct")]
        public string RepoId { get; init; } = "";

        [CommandOption("--output-dir <DIR>")]
        [Description("Where to put the files (default: /tmp/<repo name>, as torchtune)")]
        public string? OutputDir { get; init; }

        [CommandOption("--hf-token <TOKEN>")]
        [Description("Hub access token for gated or private repos (default: $HF_TOKEN)")]
        public string? HfToken { get; init; }

        [CommandOption("--ignore-patterns <GLOB>")]
        [Description("Skip files matching this glob (repeatable), e.g. --ignore-patterns 'original/*'")]
        public string[] IgnorePatterns { get; init; } = [];

        [CommandOption("--repo-type <TYPE>")]
        [Description("model (default) or dataset")]
        [DefaultValue(HubRepoType.Model)]
        public HubRepoType RepoType { get; init; } = HubRepoType.Model;

        [CommandOption("--revision <REV>")]
        [Description("Branch, tag or commit (default: main)")]
        [DefaultValue("main")]
        public string Revision { get; init; } = "main";
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        HubNames.CheckRepoId(settings.RepoId);
        var output = settings.OutputDir ?? Path.Combine(Path.GetTempPath(), settings.RepoId.Split('/')[^1]);
        var token = string.IsNullOrEmpty(settings.HfToken) ? services.Environment("HF_TOKEN") : settings.HfToken;
        using var client = new HubClient(services.Environment(HubClient.EndpointVariable));
        var lastTenth = new Dictionary<string, long>();
        var progress = new SyncProgress(p =>
        {
            if (p.Finished) { services.WriteOut($"  {p.File} ({FormatBytes(p.BytesDone)})\n"); return; }
            if (p.TotalBytes is not > 0) return;
            // A line each time a large file passes another tenth, so long downloads show they are alive.
            var tenth = p.BytesDone * 10 / p.TotalBytes.Value;
            if (tenth > lastTenth.GetValueOrDefault(p.File))
            {
                lastTenth[p.File] = tenth;
                services.WriteOut($"  {p.File}: {tenth * 10}% of {FormatBytes(p.TotalBytes.Value)}\n");
            }
        });
        services.WriteOut($"Downloading {settings.RepoId} from {client.Endpoint.GetLeftPart(UriPartial.Authority)} to {output}\n");
        var result = client.DownloadAsync(settings.RepoId, settings.RepoType, output, settings.IgnorePatterns, token, settings.Revision,
            progress, cancellationToken).GetAwaiter().GetResult();
        services.WriteOut($"Done: {result.Downloaded.Count} downloaded, {result.UpToDate.Count} already up to date, {result.Ignored.Count} ignored, in {result.OutputDir}\n");
        return 0;
    }

    private static string FormatBytes(long b) => b switch
    {
        >= 1L << 30 => $"{b / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{b / (double)(1L << 20):F1} MiB",
        >= 1L << 10 => $"{b / 1024.0:F1} KiB",
        _ => $"{b} B",
    };

    // Progress<T> posts to the thread pool; reports must print in order, on the caller's thread.
    private sealed class SyncProgress(Action<HubFileProgress> report) : IProgress<HubFileProgress>
    {
        public void Report(HubFileProgress value) => report(value);
    }
}
